"""Fixtures shared by the integration tests: real services on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.integration.services import Mosquitto, Process


@pytest.fixture
def broker(tmp_path):
    """A mosquitto broker on a free port, stopped after the test."""
    server = Mosquitto(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def refused_url():
    """An rtsp:// URL whose port is bound but never listens: connections are refused."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    yield f"rtsp://127.0.0.1:{closed.getsockname()[1]}/x"
    closed.close()


@pytest.fixture(autouse=True)
def _stop_leftover_processes():
    """Whatever a test started and did not stop (it failed half-way) is stopped after it."""
    yield
    for process in list(Process.running):
        process.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 512 kB tmpfs with 64 inodes (``fill`` fills it); skipped where mounting is refused."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,nr_inodes=64", "tmpfs", str(where)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if done.returncode:
        pytest.skip(f"a small disk is a tmpfs, and mounting one needs root: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=60)
