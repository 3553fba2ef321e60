"""What goes to systemd's journal: it is stderr when ``JOURNAL_STREAM`` names stderr's device
and inode. journald files each line at the priority of its ``<N>`` prefix (info without one),
so a line that says why facewatch stopped carries ``<3>``: ``journalctl -p err`` finds it."""

from __future__ import annotations

import os
import sys

ERR = 3  # syslog's priority of an error


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
