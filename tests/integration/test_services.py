"""The tests' own services: each one started is the one the test talks to. A port that
``free_port()`` found free can be taken before the service binds it (another test's server,
a second CI job, a client's local port): the service then exits, and a check that only
asked 'does the port answer?' took the other listener for it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.conftest import REPO
from tests.integration import services
from tests.integration.services import Mosquitto, Prometheus, RtspServer, Subscriber, wait_for


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on which someone else listens."""
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        yield int(squatter.getsockname()[1])


@pytest.fixture
def free_port_gives_first(monkeypatch, taken_port) -> int:
    """``free_port()`` hands out ``taken_port`` first, as if it was taken after the check."""
    given = iter([taken_port])
    free = services.free_port
    monkeypatch.setattr(services, "free_port", lambda: next(given, None) or free())
    return taken_port


def test_a_broker_whose_free_port_was_taken_starts_on_another(tmp_path, free_port_gives_first):
    broker = Mosquitto(tmp_path)
    assert broker.port == free_port_gives_first
    broker.start()
    try:
        assert broker.port != free_port_gives_first
        assert broker.proc is not None and broker.proc.poll() is None
        subscriber = Subscriber(broker.port)  # an MQTT answer: this broker, not the squatter
        wait_for(subscriber.client.is_connected, 10, "the subscriber to connect")
        subscriber.close()
        broker.stop()
        broker.start()  # started again: on its port, which the clients know
        assert broker.port != free_port_gives_first
    finally:
        broker.stop()


def test_a_broker_on_a_given_port_that_is_taken_says_so_at_once(tmp_path, taken_port):
    broker = Mosquitto(tmp_path, port=taken_port)
    with pytest.raises(AssertionError, match=f"mosquitto on port {taken_port} exited"):
        broker.start()
    assert "Address already in use" in broker.log()


def test_an_rtsp_server_on_a_given_port_that_is_taken_says_so_at_once(tmp_path, taken_port):
    server = RtspServer(
        tmp_path, {"cam": REPO / "configs" / "demo" / "hamilton_360p.mp4"}, taken_port
    )
    with pytest.raises(AssertionError, match="cannot listen on"):
        server.start()


def test_prometheus_whose_free_port_was_taken_starts_on_another(tmp_path, free_port_gives_first):
    prometheus = Prometheus(tmp_path, [])
    prometheus.start()
    try:
        assert prometheus.port != free_port_gives_first
        assert prometheus.api("status/buildinfo")["version"]
    finally:
        prometheus.stop()
