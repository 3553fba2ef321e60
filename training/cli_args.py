"""What the `facewatch train` commands share of their arguments: a run's folder taken for its
latest checkpoint, a command's own arguments as it was given them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def run_checkpoint(path: Path) -> Path:
    """A run's folder (what `train triplet` ends by naming) stands for its latest.pt."""
    from training.checkpoint import LATEST

    if path.is_dir() and (path / LATEST).is_file():
        logger.info("%s: a run's folder: its %s", path, LATEST)
        return path / LATEST
    return path


def argv_after(command: str) -> list[str]:
    return sys.argv[sys.argv.index(command) + 1 :] if command in sys.argv else []
