"""Fixtures shared by the integration tests: real services on 127.0.0.1."""

from __future__ import annotations

import socket

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
