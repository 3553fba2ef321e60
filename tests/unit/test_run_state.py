"""The run state behind the restart alert (daemon.run_state): unclean stops counted, and
only those of this daemon on this machine."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from prometheus_client import REGISTRY


def test_only_a_run_that_did_not_stop_cleanly_counts_for_the_restart_alert(
    tmp_path, monkeypatch, caplog
) -> None:
    """FacewatchRestarting paged for three `systemctl restart`s in an hour while tuning. Under
    the unit (its state folder), a start counts the run before only when it did not stop
    cleanly: an exit with an error, or none at all (a crash, a watchdog kill: the process
    ends without a word), and facewatch_unclean_stops_total carries the count on."""
    import argparse

    import daemon.service
    from daemon import run_cli

    codes: list[int | None] = []

    class Service:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.left_behind: list[str] = []

        def run(self) -> int:
            code = codes.pop(0)
            if code is None:  # killed: nothing after this runs
                raise SystemExit("killed")
            return code

    config = tmp_path / "facewatch.yaml"
    config.write_text("cameras: [{name: door, url: x.mp4}]\nrecognition: {model: null}\n")
    monkeypatch.setattr(daemon.service, "Service", Service)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    args = argparse.Namespace(config=str(config), run_for=None, log_level="INFO")

    def run(code: int | None) -> float | None:
        """One run ending with ``code``; the count its start exported."""
        codes.append(code)
        with contextlib.suppress(SystemExit):
            run_cli._run(args)
        return REGISTRY.get_sample_value("facewatch_unclean_stops_total")

    assert [run(0), run(0), run(0)] == [0, 0, 0]  # restarts by hand
    assert "run-state.json" not in caplog.text  # (the first start has no file: no warning)
    assert [run(None), run(1), run(0), run(0)] == [0, 1, 2, 2]  # a crash, then an error
    monkeypatch.delenv("STATE_DIRECTORY")  # outside the unit: nothing is written
    state = (tmp_path / "state" / "run-state.json").read_text()
    run(None)
    assert (tmp_path / "state" / "run-state.json").read_text() == state
    assert sorted(os.listdir(tmp_path)) == ["facewatch.yaml", "state"]


def test_a_state_folder_that_cannot_be_written_leaves_the_restart_alert_counting_starts(
    tmp_path, monkeypatch, caplog
) -> None:
    """A state folder that cannot be written (gone, read-only after a disk error, full):
    each start exported the same count (0, or N+1), which never moved, and its presence
    turned off the alert's count of starts, so a crash loop paged nobody. Then no count is
    exported, and the log says what that does to the alert."""
    from daemon.run_state import RunState

    def count() -> float | None:
        return REGISTRY.get_sample_value("facewatch_unclean_stops_total")

    state = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    state.mkdir()
    RunState.start().close()  # a crash: never stopped cleanly
    assert count() == 0
    for name in ("run-state.json", "run-state.lock"):
        (state / name).unlink()
    state.rmdir()  # (root writes a read-only folder: gone, it cannot be written either)
    with caplog.at_level("WARNING", logger="daemon.run_state"):
        for _ in range(3):  # crashing starts
            RunState.start().close()
            assert count() is None
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3 and said[0].startswith(
        f"{state / 'run-state.json'}: cannot be written ("
    ), said
    assert said[0].endswith(
        "): unclean stops are not counted, and without facewatch_unclean_stops_total the alert "
        "FacewatchRestarting counts every start of this daemon, a systemctl restart too"
    ), said


@pytest.mark.parametrize("written", ["null", '"3"', "-1", "2.5", "[1]"])
def test_a_hand_edited_run_state_is_read_as_unreadable(tmp_path, monkeypatch, caplog, written):
    """`{"unclean_stops": null}` (an operator resetting the count by hand) raised a
    TypeError at every start under the unit: a crash loop. It is unreadable: the count
    starts again from 0, and the log says why."""
    from daemon.run_state import RunState

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "run-state.json"
    content = written if written == "[1]" else f'{{"running": true, "unclean_stops": {written}}}'
    path.write_text(content)
    with caplog.at_level("WARNING", logger="daemon.run_state"):
        started = RunState.start()
        started.close()
        assert started.unclean == 0
    why = "not a JSON object" if written == "[1]" else f"unclean_stops is {written}, not a count"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: cannot be read ({why}): unclean stops counted from 0"
    ]
    assert REGISTRY.get_sample_value("facewatch_unclean_stops_total") == 0
    assert json.loads(path.read_text()) == {
        "running": True,
        "unclean_stops": 0,
        "machine": RunState(None).machine,
    }


def test_a_second_daemon_under_the_same_state_folder_leaves_the_first_ones_count_alone(
    tmp_path, monkeypatch, caplog
) -> None:
    """Two daemons under one state folder (a copied unit that kept StateDirectory=) shared
    run-state.json: the second's start took the first's run for a crash ("did not stop
    cleanly"), and its clean stop hid the first's real crash from the next start. The file
    is the first's: the second says so, counts nothing (no series: the alert counts its
    starts), and the first's crash is counted."""
    from daemon.run_state import RunState

    def count() -> float | None:
        return REGISTRY.get_sample_value("facewatch_unclean_stops_total")

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    first = RunState.start()
    assert count() == 0
    with caplog.at_level("WARNING", logger="daemon.run_state"):
        second = RunState.start()
        assert count() is None
        second.stopped_cleanly()
        second.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'run-state.json'}: in use by another facewatch (pid {os.getpid()}) with "
        "the same state folder ($STATE_DIRECTORY): this daemon does not count its unclean "
        "stops, and without facewatch_unclean_stops_total the alert FacewatchRestarting "
        "counts every start of this daemon, a systemctl restart too; give each daemon's unit "
        "its own StateDirectory="
    ]
    first.close()  # killed: its lock goes with the process, its file says it ran
    caplog.clear()
    with caplog.at_level("WARNING", logger="daemon.run_state"):
        started = RunState.start()
        started.close()
        assert started.unclean == 1
    assert "the previous run did not stop cleanly" in caplog.text
    assert count() == 1


def test_a_run_state_copied_from_another_machine_while_it_ran_is_no_crash_here(
    tmp_path, monkeypatch, caplog
) -> None:
    """A state folder copied while the daemon ran, restored on a new box: its run-state.json
    said a run was under way, and the first start there counted a crash that never was
    (facewatch_unclean_stops_total 1, "did not stop cleanly" while checking the move). The
    file names the machine that wrote it: another one's run is not counted; this machine's,
    or a file that names none (an older facewatch's), is."""
    from daemon import claims, run_state

    machine_id = tmp_path / "machine-id"
    machine_id.write_text("b0x2\n")
    monkeypatch.setattr(claims, "MACHINE_ID_FILE", machine_id)
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    path = state / "run-state.json"
    for written_on, counted in [("b0x1", 0), ("b0x2", 1), (None, 1)]:
        found = {"running": True, "unclean_stops": 0}
        if written_on is not None:
            found["machine"] = written_on
        path.write_text(json.dumps(found))
        caplog.clear()
        with caplog.at_level("INFO", logger="daemon.run_state"):
            started = run_state.RunState.start()
            started.close()
        assert started.unclean == counted, written_on
        said = [r.getMessage() for r in caplog.records]
        if written_on == "b0x1":
            assert said == [
                f"{path}: written on another machine (machine-id b0x1), a copy taken while its "
                "daemon ran: its run there is not counted as an unclean stop here"
            ]
        else:
            assert "the previous run did not stop cleanly" in said[0], said
    assert json.loads(path.read_text())["machine"] == "b0x2"


def test_an_empty_machine_id_names_no_machine(tmp_path, monkeypatch) -> None:
    """Container images ship an empty /etc/machine-id: a daemon there knows no machine, so
    a run-state.json left running by a crash is counted, wherever it was written (an empty
    id is not another machine's), and the file it writes names none."""
    from daemon import claims, run_state

    machine_id = tmp_path / "machine-id"
    machine_id.write_text("\n")
    monkeypatch.setattr(claims, "MACHINE_ID_FILE", machine_id)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "run-state.json"
    path.write_text(json.dumps({"running": True, "unclean_stops": 0, "machine": "b0x1"}))
    started = run_state.RunState.start()
    started.close()
    assert started.unclean == 1
    assert json.loads(path.read_text())["machine"] is None
