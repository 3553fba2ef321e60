"""The commands' numeric options: a bad value is refused before anything runs, in one
wording whichever command it is (``daemon.cli_args.number``)."""

from __future__ import annotations

import pytest

from daemon.cli import main


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["run", "--run-for", "-1"], "argument --run-for: must be > 0, got -1"),
        (["run", "--run-for", "soon"], "argument --run-for: expected a finite number, got 'soon'"),
        (
            ["gallery", "calibrate", "--target-far", "1"],
            "argument --target-far: must be >= 0 and < 1, got 1",
        ),
        (["enroll", "--min-face-px", "-5"], "argument --min-face-px: must be >= 0, got -5"),
        (
            ["enroll", "--min-sharpness", "inf"],
            "argument --min-sharpness: expected a finite number, got 'inf'",
        ),
        (["detect", "--batch", "0"], "argument --batch: must be >= 1, got 0"),
        (["identify", "--threads", "1.5"], "argument --threads: expected an integer, got '1.5'"),
        (
            ["engines", "build", "--scale-factor", "1"],
            "argument --scale-factor: must be > 0.1 and < 1, got 1",
        ),
    ],
)
def test_a_bad_number_is_refused_in_one_wording(command, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
