"""One request to a peer and its answer, over a socket of its own: an HTTP/1.0 GET
(``http_get``: a camera's stream, a daemon's /metrics) or an RTSP request (``exchange``),
the answer's head parsed (``Answer``), its body read whole (Content-Length, or chunks) up to
a limit, all within one time limit however slowly the peer sends (``AnswerTimeout``); and what
a peer sent made fit to show (``peer_text``). daemon/stream_probe.py asks cameras with it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import SplitResult, quote, unquote

HEAD_LIMIT = 65536  # bytes of an answer's status line and headers
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
TLS_SCHEMES = ("rtsps", "https")
# where CA certificates are, the first found (Debian and Ubuntu, Red Hat and Fedora, Alpine)
CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


def basic_authorization(user: str, password: str) -> str:
    """The Authorization header of HTTP / RTSP Basic authentication."""
    token = f"{user}:{password}".encode(errors="surrogateescape")
    return "Basic " + base64.b64encode(token).decode()


@dataclass
class Answer:
    """An HTTP or RTSP answer: ``code`` 0 when it is none of the protocol's."""

    code: int
    reason: str  # as sent: peer_text it before showing it
    headers: list[tuple[str, str]] = field(default_factory=list)  # (name in lower case, value)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


def http_get(
    parts: SplitResult,
    netloc: str,
    timeout_s: float,
    default_path: str = "/",
    body_limit: int = 0,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """One GET of the URL ``parts`` at ``netloc`` (HTTP/1.0; the URL's user and password as
    Basic authentication; no redirect followed: a 3xx is the answer), and up to
    ``body_limit`` bytes of its body (ValueError past that). The connection and the answer
    each get ``timeout_s`` in all (TimeoutError). OSError when it cannot be made. An https
    server's certificate is checked against ``context``'s CA certificates (by default the
    system's)."""
    host, port = parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme.lower()]
    lines = [f"GET {request_path(parts, default_path)} HTTP/1.0", f"Host: {netloc}"]
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        lines.append(f"Authorization: {basic_authorization(user, password)}")
    request = "\r\n".join([*lines, "User-Agent: facewatch", "Connection: close", "", ""]).encode()
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        if parts.scheme.lower() == "https":
            context = context or ssl.create_default_context()
            with context.wrap_socket(connection, server_hostname=host) as secure:
                head, body = exchange(secure, request, timeout_s, body_limit)
        else:
            head, body = exchange(connection, request, timeout_s, body_limit)
    answer = parse_answer(head, "HTTP")
    answer.body = body
    return answer


def camera_ca_file() -> str | None:
    """The CA certificates a camera's TLS certificate is checked against (OpenCV's FFmpeg is
    told them: daemon/camera_open.py): the file SSL_CERT_FILE names, else the system's
    (CA_BUNDLES, where ``update-ca-certificates`` adds a local CA); None when none is found."""
    named = os.environ.get("SSL_CERT_FILE")
    if named:
        return named
    return next((path for path in CA_BUNDLES if os.path.isfile(path)), None)


def camera_tls_context(verify: bool) -> ssl.SSLContext:
    """A TLS client context for a camera: its certificate checked (name and CA) as OpenCV's
    FFmpeg checks it, against ``camera_ca_file()`` only, or (``verify`` False) not at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not verify:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return context
    ca_file = camera_ca_file()
    if ca_file is not None:
        with contextlib.suppress(OSError, ssl.SSLError):  # (unreadable: nothing is trusted)
            context.load_verify_locations(ca_file)
    return context


def request_path(parts: SplitResult, default: str = "/") -> str:
    """The URL's path for a request line: what would end the line or the request (a space,
    a control character) percent-encoded."""
    return quote(parts.path or default, safe="/%:@!$&'()*+,;=~-._") + (
        f"?{quote(parts.query, safe='/%:@!$&()*+,;=~-._?')}" if parts.query else ""
    )


def peer_text(text: str, limit: int = 100) -> str:
    """What a peer sent (a reason phrase, a header), fit for a log line, a metric label and a
    terminal: control characters as '?', at most ``limit`` characters."""
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


class AnswerTimeout(TimeoutError):
    """Connected, but the answer did not come whole within the time given."""


_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*([0-9]{1,12})[ \t]*\r?$", re.M | re.I)
_CHUNKED = re.compile(rb"^transfer-encoding:.*chunked", re.M | re.I)


def exchange(
    connection: socket.socket, request: bytes, timeout_s: float, body_limit: int = 0
) -> tuple[bytes, bytes]:
    """Send ``request``; the answer's head, and with ``body_limit`` its body (its
    Content-Length, else to the end of the connection; chunks joined; at most that many
    bytes: ValueError past it, or when cut short), all within ``timeout_s`` (AnswerTimeout
    past it, however slowly the peer sends: a camera that dripped its answer held the probe,
    and its camera's retries, for hours)."""
    deadline = time.monotonic() + timeout_s
    connection.settimeout(timeout_s)
    connection.sendall(request)
    data = bytearray()
    end = _receive_head(connection, data, deadline)
    if end < 0:
        return bytes(data), b""  # no blank line: what came is the head (_parse tells)
    head = bytes(data[:end]).rstrip(b"\r\n")
    if not body_limit:
        return head, b""
    length = _CONTENT_LENGTH.search(head)
    size = int(length.group(1)) if length is not None else None
    chunked = size is None and _CHUNKED.search(head) is not None
    while len(data) - end <= body_limit and not _body_complete(data, end, size, chunked):
        if not _receive(connection, data, deadline):
            break
    return head, _body(data, end, size, chunked, body_limit)


def _receive_head(connection: socket.socket, data: bytearray, deadline: float) -> int:
    """Receive into ``data`` up to the blank line after the answer's head; where its body
    starts, or -1 when the connection ends first (ValueError past HEAD_LIMIT)."""
    end = -1
    while end < 0:
        if len(data) > HEAD_LIMIT:
            raise ValueError(f"the answer's head is over {HEAD_LIMIT // 1024} kB")
        if not _receive(connection, data, deadline):
            return -1
        end = _head_end(data)
    return end


def _body_complete(data: bytearray, end: int, size: int | None, chunked: bool) -> bool:
    """Whether ``data`` holds the whole body from ``end``: its Content-Length ``size``, or
    (``chunked``) up to the last chunk."""
    if size is not None:
        return len(data) - end >= size
    return chunked and data.endswith(b"0\r\n\r\n") and _chunks(data, end) is not None


def _body(data: bytearray, end: int, size: int | None, chunked: bool, body_limit: int) -> bytes:
    """The body received from ``end`` of ``data``, chunks joined; ValueError past
    ``body_limit``, or when it was cut short."""
    body = bytes(data[end:])
    if len(body) > body_limit:
        raise ValueError(f"the answer is over {body_limit // 1_000_000} MB")
    if size is not None and len(body) < size:
        raise ValueError(f"the answer was cut short ({len(body)} of {size} bytes)")
    if not chunked:
        return body
    joined = _chunks(data, end)
    if joined is None:
        raise ValueError("the answer was cut short, or its chunks cannot be read")
    return joined


def _receive(connection: socket.socket, data: bytearray, deadline: float) -> bool:
    """Add what the peer sends next to ``data``; False at the end of the connection
    (AnswerTimeout past ``deadline``)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise AnswerTimeout
    connection.settimeout(left)
    try:
        chunk = connection.recv(65536)
    except ConnectionResetError:  # what it said is the answer (it did not read ours)
        if not data:
            raise
        return False
    except TimeoutError:
        raise AnswerTimeout from None
    data += chunk
    return bool(chunk)


def _head_end(data: bytearray) -> int:
    """Where the answer's body starts (after the blank line; bare LF line ends too), or -1."""
    ends = [(k, len(mark)) for mark in (b"\r\n\r\n", b"\n\n") if (k := data.find(mark)) >= 0]
    return min(k + length for k, length in ends) if ends else -1


def _chunks(data: bytearray, start: int) -> bytes | None:
    """The chunked body from ``start`` of ``data``, joined; None while (or when) it has no
    last chunk."""
    joined, at = bytearray(), start
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None
        try:
            size = int(bytes(data[at:line_end]).split(b";")[0].strip() or b"x", 16)
        except ValueError:
            return None
        if size == 0:
            return bytes(joined)
        at = line_end + 2
        if len(data) < at + size + 2:
            return None
        joined += data[at : at + size]
        at += size + 2


def parse_answer(head: bytes, protocol: str) -> Answer:
    """The status and headers of an answer's head (code 0: not one of ``protocol``)."""
    first, *lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    status = first.split(" ", 2)
    if len(status) < 2 or not status[0].startswith(f"{protocol}/"):
        return Answer(0, "")
    if not re.fullmatch("[0-9]{3}", status[1]):
        return Answer(0, "")
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip().lower(), value.strip()))
    return Answer(int(status[1]), (status[2] if len(status) > 2 else "").strip(), headers)
