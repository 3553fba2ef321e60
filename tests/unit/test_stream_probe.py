"""The camera probe (daemon.stream_probe) and `facewatch status` against peers that answer
badly: slowly, at length, with garbage, or echoing the credentials they were sent."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest

from daemon.cli import main
from daemon.peer_exchange import parse_answer
from daemon.stream_probe import _from_answer, silent_stream, stream_problem


def peer(
    answer: Callable[[socket.socket], None], requests: list[bytes] | None = None
) -> Iterator[int]:
    """A TCP peer on 127.0.0.1 that reads the request (kept in ``requests``), then runs
    ``answer`` on the connection; its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        connection = _accepted(listener)
        if connection is None:
            return
        with connection:
            request = connection.recv(65536)
            if requests is not None:
                requests.append(request)
            with contextlib.suppress(OSError):  # the probe went away
                answer(connection)

    yield from _serving(listener, serve)


def _serving(listener: socket.socket, serve: Callable[[], None]) -> Iterator[int]:
    """``serve`` run on a thread of its own while the caller holds the listener's port;
    then the listener and the thread ended (``_closed``)."""
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        _closed(listener, thread)


def _accepted(listener: socket.socket) -> socket.socket | None:
    """A connection to ``listener``; None once it is closed (``_closed``)."""
    try:
        return listener.accept()[0]
    except OSError:
        return None


def _closed(listener: socket.socket, thread: threading.Thread) -> None:
    """A test's peer ended: its listener shut down (which ends an accept() its thread waits
    in: closing the socket alone does not), closed, and its thread waited for."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(10)


def drip(head: bytes) -> Callable[[socket.socket], None]:
    """An answer sent a byte at a time, each well within the probe's timeout."""

    def answer(connection: socket.socket) -> None:
        for byte in head + b"a" * 100_000:
            connection.sendall(bytes([byte]))
            time.sleep(0.2)

    return answer


def says(reply: bytes) -> Callable[[socket.socket], None]:
    return lambda connection: connection.sendall(reply)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("rtsp", "its RTSP service does not answer within 1 s"),
        ("http", "does not answer the GET within 1 s"),
    ],
)
def test_a_camera_that_drips_its_answer_is_given_up_on_in_time(scheme, expected) -> None:
    """Each byte came within the socket's timeout, so the probe read on for hours (65536
    bytes, 3 s each), and the camera's thread never retried it."""
    head = b"RTSP/1.0 200 OK\r\nX: " if scheme == "rtsp" else b"HTTP/1.0 200 OK\r\nX: "
    for port in peer(drip(head)):
        start = time.monotonic()
        problem = stream_problem(f"{scheme}://user:pass1234@127.0.0.1:{port}/live", 1.0)
        assert time.monotonic() - start < 2.5
        assert problem is not None and expected in problem


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"RTSP/1.0 200 OK\r\n\r\n", "does not answer as an HTTP server"),  # the RTSP port
        (b"\x1b[2J\x1b[31mFAKE LOG LINE\r\n\r\n", "does not answer as an HTTP server"),
        (b"HTTP/1.0 \xc2\xb200 OK\r\n\r\n", "does not answer as an HTTP server"),
        (b"HTTP/1.0 " + b"4" * 5000 + b" x\r\n\r\n", "does not answer as an HTTP server"),
        (b"HTTP/1.0 200 OK\r\nX: " + b"a" * 70_000, "the answer's head is over 64 kB"),
        (b"HTTP/1.0 404 Not\x1b[31m Found\r\n\r\n", "no stream at /live (HTTP 404 Not?[31m Found)"),
    ],
)
def test_a_garbled_http_answer_is_said_plainly(reply, expected) -> None:
    """These raised out of the probe (http.client's BadStatusLine, LineTooLong, int() of a
    superscript digit): the camera's log line was then the peer's raw bytes."""
    for port in peer(says(reply)):
        problem = stream_problem(f"http://127.0.0.1:{port}/live", 2.0)
        assert problem is not None and expected in problem and problem.isprintable(), problem


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_camera_that_echoes_the_credentials_does_not_show_them(scheme) -> None:
    """The reason phrase goes to the log and to a metric label: a camera repeating the
    password or the Basic token it was sent must not put them there."""
    token = "dXNlcjpodW50ZXIyMg=="  # base64 of user:hunter22
    reply = f"{scheme.upper()}/1.0 403 bad login user:hunter22 (Basic {token})\r\n\r\n"
    for port in peer(says(reply.encode())):
        problem = stream_problem(f"{scheme}://user:hunter22@127.0.0.1:{port}/live", 2.0)
        assert problem is not None and "refused the user name or password" in problem
        assert "hunter22" not in problem and token not in problem, problem


def test_a_space_in_the_path_is_asked_for_not_a_crash() -> None:
    """A camera URL with a space in its path (the config takes it): http.client refused to
    send it (InvalidURL), and the camera got no diagnosis."""
    seen: list[bytes] = []
    for port in peer(says(b"HTTP/1.0 404 Not Found\r\n\r\n"), seen):
        problem = stream_problem(f"http://127.0.0.1:{port}/my stream", 2.0)
    assert problem is not None and "no stream at /my stream (HTTP 404" in problem
    assert seen[0].startswith(b"GET /my%20stream HTTP/1.0\r\n")


def test_status_gives_up_on_a_page_that_drips_and_reads_odd_pages_whole(capsys) -> None:
    """A health check must not hang on a peer that drips the page; NaN values, labels
    missing or holding terminal escapes are shown, not a traceback."""
    for port in peer(drip(b"HTTP/1.0 200 OK\r\n\r\n")):
        start = time.monotonic()
        assert main(["status", "--url", f"127.0.0.1:{port}", "--interval", "0.1"]) == 3
        assert time.monotonic() - start < 12  # two scrapes at most, 5 s each
    assert "no whole answer within 5 s" in capsys.readouterr().err
    page = (
        b'facewatch_build_info{version="1",backend="x",model="m"} 1\n'
        b"facewatch_mqtt_spool_events NaN\nprocess_start_time_seconds +Inf\n"
        b'facewatch_camera_up{camera="d\x1b[2Jx"} 0\nfacewatch_camera_up 1\n'
        b'facewatch_camera_down_since_seconds{camera="d"} 5\n'
    )

    for port in metrics_peer(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + page):
        assert main(["status", "--url", f"127.0.0.1:{port}", "--interval", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "camera d?[2Jx is down" in out and "\x1b" not in out


def metrics_peer(reply: bytes, second: bytes | None = None) -> Iterator[int]:
    """A peer on 127.0.0.1 that answers ``reply`` to status's first scrape, and ``second``
    (else ``reply`` again) to its second; its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        for answer in (reply, reply if second is None else second):
            connection = _accepted(listener)
            if connection is None:  # (status scraped once)
                return
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    yield from _serving(listener, serve)


def test_status_reckons_ages_on_the_daemons_clock(capsys) -> None:
    """`status --url` on another host whose clock is an hour ahead: up 2 h and a camera
    down for 10 min by the daemon's clock (its Date header), not 1 h and 0 s (or a
    negative uptime) by this machine's."""
    daemon_now = float(int(time.time()) + 3600)  # (a Date header is in whole seconds)
    page = (
        b'facewatch_build_info{version="1",backend="x",model="m"} 1\n'
        b"process_start_time_seconds %.3f\n"
        b'facewatch_camera_up{camera="gate"} 0\n'
        b'facewatch_camera_down_since_seconds{camera="gate",reason="cannot open"} %.3f\n'
    ) % (daemon_now - 7200, daemon_now - 600)
    head = b"HTTP/1.0 200 OK\r\nDate: %s\r\n\r\n" % formatdate(daemon_now, usegmt=True).encode()
    for port in metrics_peer(head + page):
        assert main(["status", "--url", f"127.0.0.1:{port}", "--interval", "0.1"]) == 1
    out = capsys.readouterr().out
    assert ": up 2 h 0 min" in out
    assert "camera gate is down for 10 min: cannot open" in out


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_camera_that_does_not_take_the_connection_is_off_not_hung(scheme) -> None:
    """A connection that is never accepted (here: a full backlog) is a camera off or out of
    reach; one accepted and left unanswered is a hung service (told apart again after the
    probe's own GET folded both into 'hung')."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = []
    for _ in range(4):  # fill the backlog
        client = socket.socket()
        client.settimeout(0.3)
        try:
            client.connect(("127.0.0.1", port))
        except OSError:
            client.close()
            break
        held.append(client)
    problem = stream_problem(f"{scheme}://127.0.0.1:{port}/live", 1.0)
    for client in held:
        client.close()
    listener.close()
    assert (
        problem == f"127.0.0.1:{port} does not answer within 1 s (off, unreachable, or a firewall)"
    )


def test_an_rtsp_url_with_a_query_is_asked_for_as_written() -> None:
    """The query went twice into the DESCRIBE (…?channel=1&subtype=0?channel=1&subtype=0)."""
    seen: list[bytes] = []
    for port in peer(says(b"RTSP/1.0 404 Not Found\r\nCSeq: 1\r\n\r\n"), seen):
        url = f"rtsp://127.0.0.1:{port}/cam/realmonitor?channel=1&subtype=0"
        problem = stream_problem(url, 2.0)
    assert problem is not None and "no stream at /cam/realmonitor (RTSP 404" in problem
    assert seen[0].startswith(
        f"DESCRIBE rtsp://127.0.0.1:{port}/cam/realmonitor?channel=1&subtype=0 RTSP/1.0\r\n".encode()
    )


def test_an_answer_with_bare_line_feeds_is_read() -> None:
    for port in peer(says(b"HTTP/1.0 404 Not Found\nServer: cam\n\n")):
        problem = stream_problem(f"http://127.0.0.1:{port}/live", 2.0)
        assert problem is not None and "no stream at /live (HTTP 404 Not Found)" in problem


def test_a_password_echoed_at_the_end_of_a_long_reason_does_not_show_in_part() -> None:
    """The reason is cut to be shown: masking it after the cut left the password's start."""
    reply = b"HTTP/1.0 401 " + b"x" * 95 + b" hunter22secret\r\n\r\n"
    for port in peer(says(reply)):
        problem = stream_problem(f"http://user:hunter22secret@127.0.0.1:{port}/live", 2.0)
        assert problem is not None and "hunter" not in problem, problem


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # keep-alive: the connection stays open after the page (Content-Length tells its end)
        (b"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: keep-alive\r\n\r\n{page}", 1),
        # chunked, in two chunks
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}", 1),
        # cut short: less than its Content-Length, then the connection ends
        (b"HTTP/1.0 200 OK\r\nContent-Length: 99999\r\n\r\n{page}", 3),
    ],
)
def test_status_reads_a_page_by_its_length_or_its_chunks(capsys, answer, expected) -> None:
    page = (
        b'facewatch_build_info{version="1",backend="x",model="m"} 1\n'
        b'facewatch_camera_up{camera="door"} 0\n'
    )
    half = len(page) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        page[:half],
        len(page) - half,
        page[half:],
    )
    reply = (
        answer.replace(b"{n}", str(len(page)).encode())
        .replace(b"{page}", page)
        .replace(b"{chunks}", chunks)
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    keep: list[socket.socket] = []

    def serve() -> None:
        for _ in range(2):  # two scrapes (one where the first is cut short)
            connection = _accepted(listener)
            if connection is None:
                return
            connection.recv(65536)
            connection.sendall(reply)
            if b"keep-alive" in reply:
                keep.append(connection)  # left open
            else:
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    start = time.monotonic()
    where = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        assert main(["status", "--url", where, "--interval", "0.1"]) == expected
        assert time.monotonic() - start < 4, "a page is whole at its length, not at the timeout"
    finally:
        _closed(listener, thread)
        for connection in keep:
            connection.close()
    if expected == 1:
        assert "camera door is down" in capsys.readouterr().out
    else:
        assert "the answer was cut short" in capsys.readouterr().err


def test_status_names_a_camera_whose_frames_are_mostly_dropped(capsys) -> None:
    """Four 1080p cameras on two cores: 92 % of the frames dropped, and status said all was
    well (exit 0). Past a fifth dropped, it names the camera and what to do, exit 1."""

    def page(read: int, dropped: int) -> bytes:
        return (
            b"HTTP/1.0 200 OK\r\n\r\n"
            b'facewatch_build_info{version="1",backend="x",model="m"} 1\n'
            b'facewatch_camera_up{camera="gate"} 1\nfacewatch_camera_up{camera="door"} 1\n'
            b'facewatch_frames_read_total{camera="gate"} %d\n'
            b'facewatch_frames_dropped_total{camera="gate"} %d\n'
            b'facewatch_frames_read_total{camera="door"} %d\n'
        ) % (read, dropped, read)

    for port in metrics_peer(page(1000, 100), page(1050, 140)):
        assert main(["status", "--url", f"127.0.0.1:{port}", "--interval", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "camera gate cannot be kept up with: 80 % of its frames dropped" in out
    assert "camera door" not in out.split("problem")[-1]
    # 3 of 5 frames in a short interval: too few to tell an overload from a moment's stall
    for port in metrics_peer(page(1000, 100), page(1005, 103)):
        assert main(["status", "--url", f"127.0.0.1:{port}", "--interval", "0.1"]) == 0


def test_status_calls_a_pipeline_that_takes_no_frame_stalled(capsys) -> None:
    """A hung engine call: searched/s 0 while every frame is dropped, and status advised a
    lower cameras[].fps. It says the pipeline is stalled (exit 1), and gives no fps."""

    def page(read: int, dropped: int) -> bytes:
        return (
            b"HTTP/1.0 200 OK\r\n\r\n"
            b'facewatch_build_info{version="1",backend="x",model="m"} 1\n'
            b'facewatch_camera_up{camera="gate"} 1\n'
            b'facewatch_frames_read_total{camera="gate"} %d\n'
            b'facewatch_frames_dropped_total{camera="gate"} %d\n'
            b'facewatch_frames_processed_total{camera="gate"} 500\n'
        ) % (read, dropped)

    for port in metrics_peer(page(1000, 500), page(1030, 530)):
        assert main(["status", "--url", f"127.0.0.1:{port}", "--interval", "0.5"]) == 1
    problems = capsys.readouterr().out.split("problem: ")[1:]
    assert problems[-1].startswith("no frame of any camera went through the pipeline between")
    assert "it is stalled" in problems[-1] and "read again with --interval 30" in problems[-1]
    assert "fps" not in problems[-1]


def test_status_sizes_its_advice_for_a_pipeline_behind(tmp_path, capsys) -> None:
    """Eight cameras at 5 fps on a small box, 62 % of each one's frames dropped: eight lines
    each said `lower the cameras' fps, use sub-streams, set detection.full_scan_every, or
    move to a GPU`, with full_scan_every already 5 and no word of which fps would do. One
    line says what the pipeline handles in all, the fps that fits each camera (the key's
    name), the stream's own rate or sub-stream (the decoding costs too), and full_scan_every
    only where it is 1 (or not known: status --url)."""
    from daemon.status_cli import Camera, Status

    cameras = [
        Camera(f"cam{k}", True, 25.0, 5.0, 1.9, 0.0, 3.1, 1.0, 0, behind=True) for k in range(8)
    ]
    status = Status("u", "v", "b", "m", 1.0, "connected", 0, False, 0, cameras, 0.0, 5)
    problems = status.problems()
    assert problems[:8] == [
        f"camera cam{k} cannot be kept up with: 62 % of its frames dropped" for k in range(8)
    ]
    assert problems[8:] == [
        "the pipeline cannot keep up: it handles 15.2 frames/s in all: set cameras[].fps to "
        "at most 1.9 for each of the 8 cameras (and the camera's own stream to that frame "
        "rate, or use its sub-stream: decoding a full stream costs CPU too), or move to a GPU"
    ]
    status.full_scan_every = 1
    assert "set detection.full_scan_every: 5, or move" in status.problems()[-1]

    def page(read: int, dropped: int) -> bytes:
        return (
            b"HTTP/1.0 200 OK\r\n\r\n"
            b'facewatch_build_info{version="1",backend="x",model="m"} 1\n'
            b'facewatch_camera_up{camera="gate"} 1\n'
            b'facewatch_frames_read_total{camera="gate"} %d\n'
            b'facewatch_frames_dropped_total{camera="gate"} %d\n'
            b'facewatch_frames_processed_total{camera="gate"} %d\n'
        ) % (read, dropped, read - dropped)

    config = tmp_path / "facewatch.yaml"
    for port in metrics_peer(page(1000, 100), page(1050, 140)):
        config.write_text(
            "cameras: [{name: gate, url: 'rtsp://10.0.0.9/live'}]\n"
            f"detection: {{full_scan_every: 5}}\nmetrics: {{port: {port}}}\n"
        )
        assert main(["status", "--config", str(config), "--interval", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "frames/s in all: set cameras[].fps to at most" in out
    assert "full_scan_every" not in out
    for port in metrics_peer(page(1000, 100), page(1050, 140)):
        assert main(["status", "--url", f"127.0.0.1:{port}", "--interval", "0.5"]) == 1
    assert "set detection.full_scan_every: 5 where it is 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("answer", "credentials", "expected"),
    [
        (
            b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n\r\n",
            True,
            "refused the user name or password",
        ),
        (b"RTSP/1.0 401 Unauthorized\r\n\r\n", False, "wants a user name and password"),
        (b"RTSP/1.0 454 Session Not Found\r\n\r\n", False, "answered RTSP 454 Session Not Found"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", False, "does not answer as an RTSP server"),
        (b"RTSP/1.0 200 OK\r\n\r\n", False, None),
    ],
)
def test_what_a_cameras_rtsp_answer_means(answer, credentials, expected) -> None:
    url = "rtsp://u:p@cam.lan/live" if credentials else "rtsp://cam.lan/live"
    problem = _from_answer(parse_answer(answer.split(b"\r\n\r\n")[0], "RTSP"), urlsplit(url))
    assert problem is None if expected is None else expected in problem


def test_what_a_camera_says_cannot_forge_log_lines_or_terminal_escapes() -> None:
    """The reason phrase is the camera's (or a man in the middle's): it goes into the log,
    a metric label and `facewatch status`, with no line break or escape of its own."""
    answer = b"RTSP/1.0 404 Not Found\nERROR daemon.mqtt: spool deleted\x1b[31m\r\n\r\n"
    head = answer.split(b"\r\n\r\n")[0]
    problem = _from_answer(parse_answer(head, "RTSP"), urlsplit("rtsp://cam.lan/live"))
    # (a bare line feed ends a line, as RTSP allows: the rest is a header, not the reason)
    assert problem is not None and "no stream at /live (RTSP 404 Not Found)" in problem
    assert problem.isprintable() and "ERROR" not in problem, problem


def test_a_redirect_is_named_and_the_credentials_do_not_follow_it(capsys) -> None:
    """An HTTP camera (or a metrics proxy) that redirects elsewhere: the probe and `facewatch
    status` say where to, and the Basic credentials of the URL never reach that other host."""
    seen: list[str | None] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    target = f"http://127.0.0.1:{other.server_address[1]}/login"

    class Redirecting(Elsewhere):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()

    camera = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    for server in (other, camera):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    where = f"127.0.0.1:{camera.server_address[1]}"
    try:
        problem = stream_problem(f"http://admin:Plain5ecret@{where}/video.mjpg")
        assert problem == (
            f"the camera redirects /video.mjpg to {target} (HTTP 302: a login page? give the "
            "stream's own URL)"
        )
        assert main(["status", "--url", f"http://prom:ProxyPass@{where}", "--interval", "0.1"]) == 3
        assert f"it redirects to {target} (give that URL to --url)" in capsys.readouterr().err
    finally:
        for server in (camera, other):
            server.shutdown()
            server.server_close()  # (its listening socket)
    assert seen == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://[::1/x", "the URL cannot be read"),
        ("rtsp://192.168.1..10/x", "host 192.168.1..10 not found"),
        ("rtmp://cam.lan/x", None),  # only RTSP and HTTP are asked
    ],
)
def test_a_url_the_probe_cannot_use_is_an_answer_not_a_crash(url, expected) -> None:
    """A crash here killed the camera's reader thread: no retries, no reconnects."""
    problem = stream_problem(url)
    assert problem is None if expected is None else expected in problem


def test_status_of_a_port_that_is_no_daemon_says_so(capsys) -> None:
    """`facewatch status --url` on a port where another service answers (here an SSH-like
    banner): exit 3 and a sentence, not a traceback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def banner() -> None:
        connection = _accepted(listener)
        if connection is not None:
            connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            connection.close()

    thread = threading.Thread(target=banner, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/metrics"
    try:
        assert main(["status", "--url", url, "--interval", "0.1"]) == 3
    finally:
        _closed(listener, thread)
    assert f"no facewatch daemon answers at {url}: not a web server there" in (
        capsys.readouterr().err
    )


def test_status_behind_a_proxy_with_a_password_and_its_usage_errors(capsys) -> None:
    """`facewatch status --url` on a page behind Basic authentication (a reverse proxy's):
    the password is sent, never shown; HOST:PORT alone will do; usage errors exit 2; a page
    that is not facewatch's exits 3 with a JSON answer for a health check."""
    from prometheus_client import generate_latest

    from daemon import metrics

    metrics.init("garage-box", ["door"], "openvino", "", mqtt=False)
    expected = "Basic " + base64.b64encode(b"admin:s3cret").decode()

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = generate_latest() if self.path == "/metrics" else b"<html>hello</html>"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    where = f"127.0.0.1:{server.server_address[1]}"
    try:
        assert main(["status", "--url", f"http://admin:s3cret@{where}", "--json",
                     "--interval", "0.1"]) == 1  # fmt: skip
        out, err = capsys.readouterr()
        report = json.loads(out)
        # (the registry is this test process's: other tests' cameras may be in it too, door
        # among them, down for a reason of its own)
        door = [p for p in report["problems"] if p.startswith("camera door is down")]
        assert report["running"] and door, report["problems"]
        assert report["url"] == f"http://admin:***@{where}" and "s3cret" not in out + err
        assert main(["status", "--url", f"admin:wrong@{where}", "--interval", "0.1"]) == 3
        err = capsys.readouterr().err
        assert (
            f"no facewatch daemon answers at http://admin:***@{where}: HTTP 401 Unauthorized" in err
        )
        assert main(["status", "--url", f"http://admin:s3cret@{where}/", "--json",
                     "--interval", "0.1"]) == 3  # fmt: skip
        out, err = capsys.readouterr()
        assert "answers, but not as facewatch: not a Prometheus metrics page" in err
        assert json.loads(out)["running"] is False
    finally:
        server.shutdown()
        server.server_close()
    for args in (["--url", "rtsp://cam/x"], ["--interval", "inf"], ["--url", where, "-c", "x"]):
        assert main(["status", *args]) == 2
    assert "expected http(s)://HOST:PORT/metrics" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["::1:9708", "http://::1:9708/metrics", "fd00::5:9708"])
def test_status_at_an_ipv6_address_without_brackets_says_to_add_them(url, capsys) -> None:
    """--url ::1:9708 said 'expected http(s)://HOST:PORT/metrics' alone."""
    from daemon.cli import main

    assert main(["status", "--url", url]) == 2
    assert (
        f"--url {url}: expected http(s)://HOST:PORT/metrics (an IPv6 address in brackets: "
        "http://[::1]:9708/metrics)" in capsys.readouterr().err
    )


@pytest.mark.parametrize("url", ["cam:1:2", "http://10.0.0.5:9708:9708/metrics"])
def test_status_at_a_host_with_a_colon_too_many_is_not_told_about_ipv6(url, capsys) -> None:
    from daemon.cli import main

    assert main(["status", "--url", url]) == 2
    said = capsys.readouterr().err
    assert f"--url {url}: expected http(s)://HOST:PORT/metrics" in said and "IPv6" not in said


def test_whether_an_rtsp_camera_answers_is_asked_with_options_and_any_answer_will_do() -> None:
    """Before OpenCV opens a stream (under a lock every camera's open needs) the camera is
    asked whether it answers at all. With OPTIONS: a DESCRIBE sets up the stream, which an
    RTSP server (GStreamer's) was still tearing down when OpenCV's own came, and refused
    that one (RTSP 503). Whatever it answers, it answers: OpenCV's open and its reason
    follow; one that accepts and says nothing is named as hung."""
    seen: list[bytes] = []
    for port in peer(says(b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n\r\n"), seen):
        assert silent_stream(f"rtsp://user:pass1234@127.0.0.1:{port}/live", 1.0) is None
    assert seen[0].startswith(f"OPTIONS rtsp://127.0.0.1:{port}/live RTSP/1.0\r\n".encode())
    for port in peer(lambda connection: time.sleep(2)):
        problem = silent_stream(f"rtsp://127.0.0.1:{port}/live", 1.0)
    assert problem == (
        f"127.0.0.1:{port} accepts the connection but its RTSP service does not answer "
        "within 1 s (hung? restart the camera)"
    )


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm="cam", nonce="1"\r\n\r\n',
        b"HTTP/1.1 302 Found\r\nLocation: /login.html\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>",
        b"HTTP/1.0 404 Not Found\r\n\r\n",
    ],
)
def test_an_http_camera_that_answers_anything_is_left_to_opencv(reply) -> None:
    """The check before the open asks only whether the camera answers: Digest
    authentication (the check sends none), a redirect, a page, all opened by FFmpeg or
    explained by stream_problem when it fails; they were refused before OpenCV was tried,
    and retried for ever. One that accepts the connection and says nothing is hung."""
    seen: list[bytes] = []
    for port in peer(says(reply), seen):
        assert silent_stream(f"http://user:pass1234@127.0.0.1:{port}/video.mjpg", 1.0) is None
    assert seen[0].startswith(b"GET /video.mjpg HTTP/1.0\r\n") and b"pass1234" not in seen[0]
    for port in peer(lambda connection: time.sleep(2)):
        problem = silent_stream(f"http://127.0.0.1:{port}/video.mjpg", 1.0)
    assert problem == (
        f"127.0.0.1:{port} accepts the connection but its HTTP service does not answer "
        "within 1 s (hung? restart the camera)"
    )


def test_an_https_camera_with_its_own_certificate_is_opened_and_then_its_certificate_named(
    tmp_path, monkeypatch
) -> None:
    """Most cameras' https has a certificate they made themselves. The check before the open
    does not verify it (it asks only whether the camera answers); when the stream does not
    open, the reason is that certificate, which OpenCV's FFmpeg is told to check
    (camera_open.capture_options) and this host does not trust, not the camera's answer; and
    an SSL_CERT_FILE that names no readable file is said to."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command, to make the camera's certificate")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=camera", "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    replies = [
        b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\n\r\n",
    ]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        for reply in replies:
            connection = _accepted(listener)
            if connection is None:
                return
            secure = context.wrap_socket  # (a handshake the client gave up on: suppressed)
            with connection, contextlib.suppress(OSError), secure(connection, True) as tls:
                tls.recv(65536)
                tls.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/video.mjpg"
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.pem"))
    try:
        assert silent_stream(url, 2.0) is None
        problem = stream_problem(url, 2.0)
    finally:
        _closed(listener, thread)
    assert problem is not None and "its TLS certificate is not trusted here" in problem, problem
    assert f"checked against {tmp_path / 'gone.pem'}, which cannot be read" in problem, problem


def test_the_advice_never_names_an_fps_the_config_refuses() -> None:
    """A GPU box handling 125 frames/s behind with two cameras: 'at most 62.5' was advised,
    which cameras[].fps refuses (at most 60)."""
    from daemon.metrics import drops_advice

    assert "set cameras[].fps to at most 60 for each of the 2 cameras" in drops_advice(125, 2, 1)
