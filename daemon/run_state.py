"""Whether the daemon's runs end cleanly, for the alert FacewatchRestarting: a crash, a
watchdog kill or an exit with an error pages; a `systemctl restart` does not.

Under the systemd unit, a file in its state folder (``$STATE_DIRECTORY``) says that a run is
under way from its start until it stops cleanly (exit status 0: SIGTERM, --run-for). A start
that finds it still there counts the run before as an unclean stop, and
``facewatch_unclean_stops_total`` carries the count from run to run. Outside the unit (no
state folder) nothing is written and the series is absent: the alert counts every start;
so it is when the file cannot be written (a read-only or full disk), where a count that
cannot move would keep the alert quiet through a crash loop.

The file is one daemon's: it holds ``run-state.lock`` while it runs. A second facewatch
under the same state folder (a copied unit that kept ``StateDirectory=``) counts nothing
and says so: it took the first one's run for a crash, and its clean stop hid the first
one's real crash. The file names the machine it was written on (``/etc/machine-id``): a
copy restored on another machine, taken while the daemon ran, is no crash there.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

from daemon import metrics
from daemon.claims import claim, machine_id

logger = logging.getLogger(__name__)

FILE = "run-state.json"
LOCK_FILE = "run-state.lock"
NO_COUNT = (
    "without facewatch_unclean_stops_total the alert FacewatchRestarting counts every "
    "start of this daemon, a systemctl restart too"
)


class RunState:
    """The state file of one run; without a state folder, it does nothing."""

    def __init__(self, folder: str | None) -> None:
        self.path = Path(folder) / FILE if folder else None
        self.unclean = 0
        self.machine = machine_id()
        self._lock = -1  # the open run-state.lock, held while this daemon runs

    @classmethod
    def start(cls) -> RunState:
        """Mark this run as under way, counting the run before if it never stopped cleanly.
        A file that cannot be written exports no count: the alert then counts every start
        (a count that could not move would keep it quiet through a crash loop)."""
        state = cls(os.environ.get("STATE_DIRECTORY", "").split(":")[0] or None)
        if state.path is None:
            return state
        if not state._claim():
            metrics.export_unclean_stops(None)
            return state
        running, counted = state._read()
        state.unclean = counted + running
        if running:
            logger.warning(
                "the previous run did not stop cleanly (a crash, a watchdog kill, an exit with "
                "an error, or the power): %d such stop(s) so far (%s)",
                state.unclean,
                state.path,
            )
        failed = state._write(running=True)
        if failed is not None:
            logger.warning(
                "%s: cannot be written (%s): unclean stops are not counted, and %s",
                state.path,
                failed,
                NO_COUNT,
            )
        metrics.export_unclean_stops(state.unclean if failed is None else None)
        return state

    def _claim(self) -> bool:
        """Hold the state folder's lock; False (said) when another facewatch holds it: the
        file is then that one's, and this daemon neither reads nor writes it. A lock file
        that cannot be made (no folder, a read-only disk) is left to the write to say."""
        assert self.path is not None
        try:
            self._lock = claim(self.path.with_name(LOCK_FILE), "state folder")
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return True
            logger.warning(
                "%s: %s ($STATE_DIRECTORY): this daemon does not count its unclean stops, and "
                "%s; give each daemon's unit its own StateDirectory=",
                self.path,
                exc.strerror,
                NO_COUNT,
            )
            self.path = None
            return False
        return True

    def close(self) -> None:
        """Let go of the state folder (the process's end does it too: a crash leaves no lock)."""
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def stopped_cleanly(self) -> None:
        """This run ends as it should: the next start does not count it."""
        if self.path is None:
            return
        failed = self._write(running=False)
        if failed is not None:
            logger.warning(
                "%s: cannot be written (%s): the next start counts this clean stop as an "
                "unclean one",
                self.path,
                failed,
            )

    def _read(self) -> tuple[bool, int]:
        """Whether the run before was still under way, and the unclean stops counted until
        then; (False, 0) at the first start, and for a file that cannot be read (said)."""
        assert self.path is not None
        try:
            found = json.loads(self.path.read_text())
        except FileNotFoundError:  # the first run under the unit
            return False, 0
        except (OSError, ValueError) as exc:
            return self._unreadable(str(exc))
        if not isinstance(found, dict):
            return self._unreadable("not a JSON object")
        count = found.get("unclean_stops", 0)
        if type(count) is not int or count < 0:  # (a hand edit: null, "3", -1)
            return self._unreadable(f"unclean_stops is {json.dumps(count)}, not a count")
        running = bool(found.get("running"))
        written_on = found.get("machine")
        if running and None not in (written_on, self.machine) and written_on != self.machine:
            logger.info(
                "%s: written on another machine (machine-id %s), a copy taken while its daemon "
                "ran: its run there is not counted as an unclean stop here",
                self.path,
                written_on,
            )
            running = False
        return running, count

    def _unreadable(self, why: str) -> tuple[bool, int]:
        logger.warning("%s: cannot be read (%s): unclean stops counted from 0", self.path, why)
        return False, 0

    def _write(self, running: bool) -> OSError | None:
        """Write the state; the error when it cannot be (the daemon goes on)."""
        assert self.path is not None
        partial = self.path.with_name(FILE + ".new")
        try:
            state = {"running": running, "unclean_stops": self.unclean, "machine": self.machine}
            partial.write_text(json.dumps(state))
            partial.replace(self.path)
        except OSError as exc:
            return exc
        return None
