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
from pathlib import Path

logger = logging.getLogger(__name__)

MACHINE_ID_FILE = Path("/etc/machine-id")


def machine_id() -> str | None:
    """This machine's systemd id; None where there is none (many containers)."""
    try:
        return MACHINE_ID_FILE.read_text().strip() or None
    except OSError:
        return None


def claim(lock_file: Path, key: str) -> int:
    """Lock ``lock_file`` (made if new, owner-only) for this process and write its pid in
    it; the open file, which holds the lock until closed. Another facewatch holding it:
    OSError EBUSY, ``in use by another facewatch (pid N) with the same KEY``. A file system
    without locks (some NFS, FUSE): a warning, and the file all the same. A link there is
    refused, never followed (run as root, the file it points at would be emptied)."""
    linked = OSError(errno.EPERM, "a link, not a plain file: remove it", str(lock_file))
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise linked if exc.errno == errno.ELOOP else exc from None
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
        os.close(fd)
        raise linked
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise OSError(
            errno.EBUSY, f"in use by another facewatch (pid {holder}) with the same {key}"
        ) from None
    except OSError as exc:
        logger.warning(
            "%s: cannot be locked (%s): a second facewatch with the same %s would not be told",
            lock_file,
            exc.strerror or exc,
            key,
        )
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
