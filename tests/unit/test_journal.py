"""The log's lines (daemon.cli's formatter, daemon.journal): the time, and the journal's
priorities."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_log_lines_carry_the_time_except_in_the_journal(tmp_path) -> None:
    """Under systemd the journal stamps each line (JOURNAL_STREAM names stderr's device and
    inode) and takes its priority from a <N> prefix, on every line of a traceback too; in a
    terminal, a container or a file, the line carries the time itself."""
    program = (
        "import logging, sys; from daemon.cli import log_formatter; "
        "handler = logging.StreamHandler(); handler.setFormatter(log_formatter()); "
        "logging.basicConfig(handlers=[handler], level='DEBUG'); "
        "log = logging.getLogger('daemon.x'); log.warning('camera door: down'); "
        "log.info('MQTT: connected'); log.debug('a batch'); \n"
        "try:\n 1 / 0\n"
        "except ZeroDivisionError:\n log.exception('engine failed')"
    )
    log = tmp_path / "stderr.log"

    def lines(journal: str | None) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal is not None:
            env["JOURNAL_STREAM"] = journal
        with log.open("w") as stderr:
            subprocess.run(
                [sys.executable, "-c", program],
                stderr=stderr,
                env=env,
                check=True,
                cwd=REPO,
                timeout=300,
            )
        return log.read_text().splitlines()

    stamped = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d WARNING daemon.x: camera door: down"
    assert re.fullmatch(stamped, lines(None)[0])
    assert re.fullmatch(stamped, lines("1:2")[0])  # the journal is someone else's stream
    stat = log.stat()
    journal = lines(f"{stat.st_dev}:{stat.st_ino}")
    assert journal[:4] == [
        "<4>WARNING daemon.x: camera door: down",
        "<6>INFO daemon.x: MQTT: connected",
        "<7>DEBUG daemon.x: a batch",
        "<3>ERROR daemon.x: engine failed",
    ]
    assert journal[-1] == "<3>ZeroDivisionError: division by zero"
    assert all(line.startswith("<3>") for line in journal[4:]), "the traceback's lines too"


def test_why_facewatch_stopped_is_an_error_in_the_journal_and_plain_in_a_terminal(
    tmp_path,
) -> None:
    """`journalctl -p err` showed systemd's 'Failed with result' and none of facewatch's
    reasons: a fatal error was printed without a <N> prefix (priority info), a config
    error's second line too, an engine's message with its blank lines, and an uncaught
    traceback. At a shell the lines read as before, without a prefix."""
    config = tmp_path / "bad.yaml"
    config.write_text("cameras: [{name: door, url: door.mp4}]\nmqtt:\n  pasword: x\n")
    program = (
        "import sys; from daemon import cli; from daemon.journal import print_error\n"
        f"assert cli.main(['run', '--config', {str(config)!r}]) == 2\n"
        "print_error('model.onnx: cannot load the model\\nModel can\\'t be parsed\\n\\n')\n"
        "1 / 0\n"
    )
    log = tmp_path / "stderr.log"

    def lines(journal: bool) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        with log.open("w") as stderr:
            if journal:
                stat = log.stat()
                env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
            subprocess.run(
                [sys.executable, "-c", program], stderr=stderr, env=env, cwd=REPO, timeout=300
            )
        return log.read_text().splitlines()

    said = [
        f"error: {config}: invalid configuration",
        "  mqtt.pasword: unknown key (did you mean password?)",
        "error: model.onnx: cannot load the model",
        "Model can't be parsed",
    ]
    terminal = lines(journal=False)
    assert terminal[:4] == said, terminal
    crash = "CRITICAL daemon.cli: facewatch stopped by an unexpected error"
    assert re.fullmatch(rf"\S+ \S+ {crash}", terminal[4]), terminal  # with its time
    assert terminal[-1] == "ZeroDivisionError: division by zero"
    journal = lines(journal=True)
    assert journal[:4] == [f"<3>{line}" for line in said], journal
    assert journal[4] == f"<2>{crash}"
    assert journal[-1] == "<2>ZeroDivisionError: division by zero"
    assert all(line.startswith("<2>") for line in journal[4:]), "the traceback's lines too"
