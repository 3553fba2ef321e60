"""What importing the daemon package sets up (daemon/__init__.py)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO


def test_the_daemon_matches_on_one_blas_thread() -> None:
    """OpenBLAS's workers busy-waited after each gallery match of 2,500 faces or more: with
    1,000 people the daemon spent 58 ms of CPU a frame instead of 33. Importing facewatch
    (before numpy) keeps numpy to one thread; a value set in the environment is kept."""
    import subprocess
    import sys

    probe = (
        "import daemon, os, numpy as np\n"
        "np.ones((4, 128), np.float32) @ np.ones((128, 5000), np.float32)\n"
        "print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: OpenBLAS starts no worker threads anyway")
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.stdout.split() == ["1", "1"], out.stderr
    env["OPENBLAS_NUM_THREADS"] = "2"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.stdout.split() == ["2", "2"], out.stderr
