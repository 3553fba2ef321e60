"""What goes to systemd's journal: it is stderr when ``JOURNAL_STREAM`` names stderr's device
and inode. journald files each line at the priority of its ``<N>`` prefix (info without one),
so a line that says why facewatch stopped carries ``<3>``: ``journalctl -p err`` finds it.

A problem that lasts (a camera down, the broker away, an event output failing) is said again
every ``REMIND_S``: ``journalctl --since today`` shows one that began a week ago."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import Any, TextIO

ERR = 3  # syslog's priority of an error
REMIND_S = 600.0  # a problem that lasts is logged again this often (else at DEBUG)


class Outage:
    """A problem that lasts, for its log lines: when it began, and whether its reminder is
    due (``REMIND_S`` after it was last said at its level)."""

    def __init__(self) -> None:
        self.began = self.said = time.monotonic()

    def said_now(self) -> None:
        """It was just logged at its level: the next reminder is REMIND_S from now."""
        self.said = time.monotonic()

    def due(self) -> bool:
        """True (and counted as said) when it was last said REMIND_S ago or more."""
        now = time.monotonic()
        if now - self.said < REMIND_S:
            return False
        self.said = now
        return True

    def since(self) -> str:
        """When it began, in local time (``2025-05-01 14:03``), on the wall clock as it is
        now: NTP may have set it right since, at a board's boot."""
        began = time.time() - (time.monotonic() - self.began)
        return datetime.fromtimestamp(began).strftime("%Y-%m-%d %H:%M")


def stderr_is_journal() -> bool:
    """Whether stderr is systemd's journal stream (the unit's StandardError=journal)."""
    journal = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # no real stderr (captured, closed, None)
        return False
    return journal == f"{stat.st_dev}:{stat.st_ino}"


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, as a user at a shell reads it; in the journal each of its
    lines is filed as an error (a config error lists one key a line), and the blank lines an
    engine's message ends with are dropped."""
    text = f"error: {message}".rstrip()
    if stderr_is_journal():
        text = "\n".join(f"<{ERR}>{line}" for line in text.split("\n"))
    print(text, file=sys.stderr, flush=True)


class StdoutError(OSError):
    """stdout could not take the output (a full disk, an I/O error behind a redirect): the
    command's own failure, not that of the input it was writing about."""


class GuardedStdout:
    """stdout whose write errors are ``StdoutError`` (a reader gone away stays a
    ``BrokenPipeError``): a command that catches each input's OSError lets these through,
    so that a full disk under ``> out.jsonl`` is not blamed on the photo being written about."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutError(exc.errno, exc.strerror) from exc

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutError(exc.errno, exc.strerror) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
