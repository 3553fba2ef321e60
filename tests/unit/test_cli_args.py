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


def test_the_help_gives_the_exit_statuses_and_failures_start_with_error(capsys) -> None:
    """Only a few commands' help named their exit statuses, `facewatch --help` none; and
    `engines build` and `status` said their failures without the `error:` that a log alert
    greps for ('facewatch engines build: ...', 'no facewatch daemon answers ...')."""
    import socket

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status, every command: 0 done; 1 an input" in text
    for status in ("2 a usage, configuration or model problem", "3 `status` only",
                   "130 stopped by Ctrl-C", "141 the reader of stdout went away"):  # fmt: skip
        assert status in text
    assert "FACEWATCH_GALLERY" in text and "FACEWATCH_CONFIG" in text

    assert main(["engines", "build", "models/mtcnn/rnet.onnx", "--batch", "8", "1", "4"]) == 2
    assert capsys.readouterr().err.startswith("error: engines build: ")
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    assert main(["status", "--url", url, "--interval", "0.1"]) == 3
    assert capsys.readouterr().err.startswith(f"error: no facewatch daemon answers at {url}")


def test_c_is_config_for_enroll_identify_and_gallery_as_for_run_and_status(
    tmp_path, capsys
) -> None:
    """`run`, `status` and `engines` took -c for --config; enroll, identify and gallery
    refused it (exit 2)."""
    import json

    from daemon.cli import build_parser

    config = tmp_path / "facewatch.yaml"
    gallery = tmp_path / "people.sqlite"
    config.write_text(json.dumps({"cameras": [{"name": "door", "url": "rtsp://door/1"}],
                                  "recognition": {"gallery": str(gallery)}}))  # fmt: skip
    assert main(["gallery", "list", "-c", str(config)]) == 1
    assert f"error: {gallery}: no gallery here" in capsys.readouterr().err
    parser = build_parser()
    for argv in (["enroll", "--name", "Ada", "a.jpg"], ["identify", "a.jpg"]):
        assert parser.parse_args([*argv, "-c", str(config)]).config == config
