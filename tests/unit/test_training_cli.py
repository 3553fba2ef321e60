"""The `facewatch train` commands as a user meets them: their output, help and errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("torch")

from training.cli_facenet import main as cli  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED / "images").is_dir(), reason=f"shared data not found at {SHARED}"
)


@needs_shared
def test_align_says_its_summary_once(tmp_path: Path, capsys, caplog) -> None:
    raw = tmp_path / "raw" / "obama"
    raw.mkdir(parents=True)
    (raw / "a.jpg").symlink_to(SHARED / "images" / "obama.jpg")
    argv = ["align", str(tmp_path / "raw"), str(tmp_path / "out"), "--image-size", "96"]
    with caplog.at_level(logging.INFO):
        assert cli([*argv, "--margin", "16", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    said = out.splitlines() + logged
    assert sum("images: 1, aligned now: 1" in line for line in said) == 1, said
