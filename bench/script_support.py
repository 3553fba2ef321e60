"""What the benchmark scripts that run the daemon or write a results file share: where their
results and made clips go (``CACHE``, git-ignored), their ``--out`` option, and a kill that
stops what a run started. Each script imports it from its own folder (bench/, first on
sys.path when it runs)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def stop_on_sigterm() -> None:
    """A kill (a timeout, a cancelled job) stops what the run started, as Ctrl-C does: the
    broker, RTSP servers and daemon run in sessions of their own, out of the signal's reach,
    and only the run's clean-up stops them."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """--out, by default bench/.cache/NAME: a rerun keeps the committed results."""
    parser.add_argument(
        "--out",
        type=Path,
        default=CACHE / name,
        help="the results (JSON); bench/.cache/ is git-ignored, and bench/results/ holds the "
        "committed ones, written only when --out names them",
    )
