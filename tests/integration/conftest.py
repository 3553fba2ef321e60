"""Fixtures shared by the integration tests: real services on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.integration.services import Mosquitto, Process


@pytest.fixture
def broker(tmp_path):
    """A mosquitto broker on a free port, stopped after the test."""
    server = Mosquitto(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _stop_leftover_processes():
    """Whatever a test started and did not stop (it failed half-way) is stopped after it."""
    yield
    for process in list(Process.running):
        process.stop()
