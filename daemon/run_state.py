"""Whether the daemon's runs end cleanly, for the alert FacewatchRestarting: a crash, a
watchdog kill or an exit with an error pages; a `systemctl restart` does not.

Under the systemd unit, a file in its state folder (``$STATE_DIRECTORY``) says that a run is
under way from its start until it stops cleanly (exit status 0: SIGTERM, --run-for). A start
that finds it still there counts the run before as an unclean stop, and
``facewatch_unclean_stops_total`` carries the count from run to run. Outside the unit (no
state folder) nothing is written and the series is absent: the alert counts every start.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from daemon import metrics

logger = logging.getLogger(__name__)

FILE = "run-state.json"


class RunState:
    """The state file of one run; without a state folder, it does nothing."""

    def __init__(self, folder: str | None) -> None:
        self.path = Path(folder) / FILE if folder else None
        self.unclean = 0

    @classmethod
    def start(cls) -> RunState:
        """Mark this run as under way, counting the run before if it never stopped cleanly."""
        state = cls(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or None)
        if state.path is None:
            return state
        before = state._read()
        state.unclean = int(before.get("unclean_stops", 0)) + bool(before.get("running"))
        if before.get("running"):
            logger.warning(
                "the previous run did not stop cleanly (a crash, a watchdog kill, an exit with "
                "an error, or the power): %d such stop(s) so far (%s)",
                state.unclean,
                state.path,
            )
        state._write(running=True)
        metrics.export_unclean_stops(state.unclean)
        return state

    def stopped_cleanly(self) -> None:
        """This run ends as it should: the next start does not count it."""
        if self.path is not None:
            self._write(running=False)

    def _read(self) -> dict:
        assert self.path is not None
        try:
            found = json.loads(self.path.read_text())
        except FileNotFoundError:  # the first run under the unit
            return {}
        except (OSError, ValueError) as exc:  # unreadable: counted afresh
            logger.warning("%s: cannot be read (%s): unclean stops counted from 0", self.path, exc)
            return {}
        return found if isinstance(found, dict) else {}

    def _write(self, running: bool) -> None:
        assert self.path is not None
        partial = self.path.with_name(FILE + ".new")
        try:
            partial.write_text(json.dumps({"running": running, "unclean_stops": self.unclean}))
            partial.replace(self.path)
        except OSError as exc:  # the alert then misses a crash; the daemon goes on
            logger.warning(
                "%s: cannot be written (%s): an unclean stop may go uncounted", self.path, exc
            )
