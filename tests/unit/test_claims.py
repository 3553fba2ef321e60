"""The lock files a daemon or command holds (daemon.claims): refused, waited for, private."""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest


def _held_lock(path: Path, written: str) -> int:
    """Another facewatch's hold on ``path`` (its own open file: flock locks it against ours,
    in this process too), with ``written`` in the file."""
    import fcntl

    held = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(held, written.encode())
    return held


def test_a_daemons_lock_is_refused_at_once_and_a_brief_holders_wait_said_once(tmp_path) -> None:
    """A running daemon (its pid in the lock, nothing more) is not waited for, even by a
    claim with patience (`archive prune`, a daemon starting: 30 s): it is refused at once,
    without a word of waiting. A command holding it for a moment (`archive prune`) is
    waited for, and the wait is said once, not at each look at the lock (every 50 ms)."""
    from daemon import claims

    lock = tmp_path / "archive.lock"
    said: list[str] = []
    held = _held_lock(lock, "4242")
    try:
        started = time.monotonic()
        with pytest.raises(claims.Busy) as busy:
            claims.claim(lock, "archive.dir", "archive prune", 5.0, said.append)
        assert time.monotonic() - started < 1.0 and said == []
        assert (busy.value.pid, busy.value.brief) == ("4242", "")
    finally:
        os.close(held)
    held = _held_lock(lock, "4243 archive prune")
    threading.Timer(0.3, os.close, (held,)).start()
    os.close(claims.claim(lock, "archive.dir", "archive prune", 5.0, said.append))
    assert said == [
        f"archive.dir {tmp_path}: held by `facewatch archive prune` (pid 4243): waiting for "
        "it, up to 5 s"
    ]


def test_a_lock_whose_holder_has_not_written_its_pid_yet_is_waited_for_silently(
    tmp_path, monkeypatch
) -> None:
    """A daemon starting locks the file and writes its pid a moment later: it is waited for
    (up to PID_WAIT_S), and a prune waiting for it says nothing about a `facewatch ` with no
    pid, which is no command holding it; still unwritten, it is refused."""
    from daemon import claims

    monkeypatch.setattr(claims, "PID_WAIT_S", 0.2)
    lock = tmp_path / "archive.lock"
    said: list[str] = []
    held = _held_lock(lock, "")
    started = time.monotonic()
    try:
        with pytest.raises(claims.Busy) as busy:
            claims.claim(lock, "archive.dir", "archive prune", 5.0, said.append)
    finally:
        os.close(held)
    assert time.monotonic() - started >= 0.2, "refused before the pid could be written"
    assert busy.value.pid is None and said == []


NOT_PLAIN = "not a plain file of its own (a link, a FIFO...): remove it"


def test_a_lock_file_is_owner_only_and_a_fifo_planted_there_is_refused(tmp_path) -> None:
    """The lock is made readable by its owner only (mode 0600, whatever the umask lets
    through), and something other than a plain file where it goes (a FIFO planted there)
    is refused as one, not opened and written."""
    from daemon import claims

    lock = tmp_path / "run-state.lock"
    os.close(claims.claim(lock, "state folder"))
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    planted = tmp_path / "planted.lock"
    os.mkfifo(planted)
    with pytest.raises(OSError, match=re.escape(NOT_PLAIN)):
        claims.claim(planted, "state folder")


def test_a_file_system_without_locks_still_gets_the_lock_file_and_a_warning(
    tmp_path, monkeypatch, caplog
) -> None:
    """Some NFS and FUSE mounts refuse flock (ENOLCK): the daemon runs all the same, its pid
    written in the file, and the log says that a second daemon would not be told."""
    import errno
    import fcntl

    from daemon import claims

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = tmp_path / "lock"
    with caplog.at_level("WARNING", logger="daemon.claims"):
        os.close(claims.claim(lock, "spool_dir"))
    assert lock.read_text() == str(os.getpid())
    assert [r.getMessage() for r in caplog.records] == [
        f"{lock}: cannot be locked ({os.strerror(errno.ENOLCK)}): a second facewatch with the "
        "same spool_dir would not be told"
    ]
