"""GPU tests: skipped, with the reason, on machines without a CUDA device."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _cuda_device() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True, check=False, timeout=60
    )
    return result.stdout.strip() or None


def pytest_collection_modifyitems(config, items):
    if _cuda_device():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine (nvidia-smi lists none)")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)
