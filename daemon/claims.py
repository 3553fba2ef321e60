"""What one daemon owns on disk and a second must not share: an exclusive lock (``flock``)
on a file, held while the daemon runs. A second facewatch given the same folder (a copied
config, a copied unit) is refused or told, naming the first one's pid, instead of working
on the other's files. The lock goes with the process: a crash or a kill leaves none.
Files that say which machine wrote them (``machine_id``) tell a copy restored elsewhere.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

MACHINE_ID_FILE = Path("/etc/machine-id")
# a lock held with no pid in its file yet is being claimed: its holder writes its pid right
# after it locks, so one not written in this long is never going to be (a file system that
# lost the write, a hand-made lock)
PID_WAIT_S = 1.0
POLL_S = 0.05


class Busy(OSError):
    """The lock is held by another process: EBUSY, ``in use by another facewatch (pid N)
    with the same KEY``. ``pid``: the holder's as its file says it, read once (None: not
    written); ``brief``: what the holder said it is when it holds the lock for a moment
    only (``archive prune``), else ''."""

    def __init__(self, key: str, pid: str | None, brief: str) -> None:
        who = f"pid {pid or '?'}" + (f", `facewatch {brief}`" if brief else "")
        super().__init__(errno.EBUSY, f"in use by another facewatch ({who}) with the same {key}")
        self.pid, self.brief = pid, brief


def machine_id() -> str | None:
    """This machine's systemd id; None where there is none (many containers)."""
    try:
        return MACHINE_ID_FILE.read_text().strip() or None
    except OSError:
        return None


def claim(
    lock_file: Path,
    key: str,
    brief: str = "",
    patience_s: float = 0.0,
    say: Callable[[str], None] = logger.info,
) -> int:
    """Lock ``lock_file`` (made if new, owner-only) for this process and write its pid in
    it (then ``brief``, what this process is, when it holds the lock for a moment only: a
    command, not a daemon); the open file, which holds the lock until closed. Another
    facewatch holding it: ``Busy``, once its pid is written (up to PID_WAIT_S), or at
    once; a holder that said it holds it briefly is waited for up to ``patience_s``, the wait
    said by ``say`` (a command's user sees it on stderr: the log shows them warnings only). A file
    system without locks (some NFS, FUSE): a warning, and the file all the same. A link
    there is refused, never followed (run as root, the file it points at would be
    emptied)."""
    linked = OSError(
        errno.EPERM, "not a plain file of its own (a link, a FIFO...): remove it", str(lock_file)
    )
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise linked if exc.errno == errno.ELOOP else exc from None
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
        os.close(fd)
        raise linked
    try:
        _lock(fd, f"{key} {lock_file.parent}", patience_s, key, say)
    except Busy:
        os.close(fd)
        raise
    except OSError as exc:
        logger.warning(
            "%s: cannot be locked (%s): a second facewatch with the same %s would not be told",
            lock_file,
            exc.strerror or exc,
            key,
        )
    os.ftruncate(fd, 0)
    os.write(fd, " ".join(filter(None, [str(os.getpid()), brief])).encode())
    return fd


def _lock(fd: int, where: str, patience_s: float, key: str, say: Callable[[str], None]) -> None:
    """Lock ``fd``, waiting for a holder whose pid is not written yet (it is claiming it),
    and for ``patience_s`` for one that holds it briefly (said, naming ``where``); Busy when
    it stays held."""
    start, said = time.monotonic(), False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pid, _, brief = os.pread(fd, 64, 0).decode(errors="replace").strip().partition(" ")
            waited = time.monotonic() - start
            being_claimed = not pid and waited < PID_WAIT_S
            if not being_claimed and not (brief and waited < patience_s):
                raise Busy(key, pid or None, brief) from None
            if brief and not said:
                say(
                    f"{where}: held by `facewatch {brief}` (pid {pid}): waiting for it, up to "
                    f"{patience_s:g} s"
                )
                said = True
        time.sleep(POLL_S)
