"""Why a network camera cannot be opened, in its own words.

OpenCV only says that a stream did not open. When it does not, the camera is asked directly:
for ``rtsp://`` one TCP connection and an RTSP DESCRIBE, for ``http(s)://`` one GET. That
tells apart a host that is not found, a port where nothing listens, a camera that does not
answer (or accepts the connection and then hangs), a camera that wants a user name and
password (401), one that refuses the URL's (401 again, after answering its challenge with
them), and a path with no stream (404). A camera that accepts the request is not the
problem's cause: the caller says so. Other schemes (rtmp, udp, srt...) are not asked.

Before OpenCV opens a stream, ``silent_stream`` asks the camera whether it answers at all
(OpenCV waits out a silent camera's open under a lock that every other camera's open needs).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import SplitResult, quote, unquote, urlsplit

from daemon.config_file import redact_url

TIMEOUT_S = 3.0
HEAD_LIMIT = 65536  # bytes of an answer's status line and headers
DEFAULT_PORTS = {"rtsp": 554, "http": 80, "https": 443}
_CHALLENGE = re.compile(r'(\w+)="?([^",]*)"?')
UNREADABLE = "the URL cannot be read (a bracket left open, or no port number after the host's ':')"


class _Camera(NamedTuple):
    parts: SplitResult
    scheme: str  # rtsp, http or https
    host: str
    port: int
    netloc: str  # HOST:PORT, as the messages name it


def _camera(url: str) -> _Camera | str | None:
    """The camera an ``rtsp://`` or ``http(s)://`` URL names; UNREADABLE when the URL cannot
    be read (its text may hold the password: not repeated), None for another scheme."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return UNREADABLE
    scheme = parts.scheme.lower()
    if not host or scheme not in DEFAULT_PORTS:
        return None
    port = port if port is not None else DEFAULT_PORTS[scheme]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return _Camera(parts, scheme, host, port, netloc)


def stream_problem(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """What is wrong with a camera's ``rtsp://`` or ``http(s)://`` URL, or None when the
    camera serves it (or another scheme): then the cause lies elsewhere (e.g. the video).
    Each answer is waited for ``timeout_s`` in all, however slowly the camera sends it."""
    camera = _camera(url)
    if not isinstance(camera, _Camera):
        return camera
    parts, scheme, host, port, netloc = camera
    password = unquote(parts.password or "")
    try:
        if scheme == "rtsp":
            problem = _rtsp_problem(parts, host, port, netloc, timeout_s)
        else:
            problem = _http_problem(parts, netloc, timeout_s)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a host name IDNA refuses
        problem = _unreachable(exc, host, netloc, timeout_s)
    except ValueError as exc:  # an answer too long
        problem = f"{netloc}: {exc}"
    return None if problem is None else _masked(peer_text(problem, 400), password)


def silent_stream(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """Why a network camera would keep an open waiting (its host not found, nothing
    listening, no answer, or a service that accepts the connection and then hangs), or None
    when it answers anything at all (or for another scheme than rtsp and http(s)). Asked as
    lightly as it can be, and only that: for ``rtsp://`` one OPTIONS (a DESCRIBE sets up the
    stream, which a server may still be tearing down when the real client comes: it refused
    that one), for ``http(s)://`` one GET whose head alone is read, its certificate not
    checked. A 401, a redirect, a refused handshake are answers: OpenCV may still open what
    this cannot (Digest authentication, a self-signed certificate); ``stream_problem`` says
    why when it does not."""
    camera = _camera(url)
    if not isinstance(camera, _Camera):
        return camera
    parts, scheme, host, port, netloc = camera
    if scheme == "rtsp":
        request = f"OPTIONS rtsp://{netloc}{_path(parts)} RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    else:
        request = (
            f"GET {_path(parts)} HTTP/1.0\r\nHost: {netloc}\r\nUser-Agent: facewatch\r\n"
            "Connection: close\r\n\r\n"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            if scheme == "https":
                with _tls(verify=False).wrap_socket(connection, server_hostname=host) as secure:
                    _exchange(secure, request.encode(errors="surrogateescape"), timeout_s)
            else:
                _exchange(connection, request.encode(errors="surrogateescape"), timeout_s)
    except AnswerTimeout:
        return _hangs(netloc, scheme.upper().rstrip("S"), timeout_s)
    except ssl.SSLError:  # it answered, in a TLS FFmpeg may still speak
        return None
    except (OSError, UnicodeError) as exc:
        return _unreachable(exc, host, netloc, timeout_s)
    except ValueError:  # an answer too long: an answer all the same
        return None
    return None


def _hangs(netloc: str, protocol: str, timeout_s: float) -> str:
    return (
        f"{netloc} accepts the connection but its {protocol} service does not answer within "
        f"{timeout_s:g} s (hung? restart the camera)"
    )


def _masked(text: str, password: str) -> str:
    """``text`` without the URL's password, nor its Basic token, should the camera echo them
    (and without any password of the config: ``redact_url``)."""
    if len(password) >= 4:
        text = text.replace(password, "***")
    return redact_url(re.sub(r"(?i)\b(basic)\s+[A-Za-z0-9+/=]{8,}", r"\1 ***", text))


def _rtsp_problem(
    parts: SplitResult, host: str, port: int, netloc: str, timeout_s: float
) -> str | None:
    """One DESCRIBE (two, answering the camera's challenge with the URL's user)."""
    target = f"rtsp://{netloc}{_path(parts)}"
    user = (unquote(parts.username or ""), unquote(parts.password or ""))
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        try:
            answer = _parse(_exchange(connection, _describe(target, 1), timeout_s)[0], "RTSP")
            if answer.code == 401 and parts.username is not None:
                authorization = _authorization(answer, target, *user)
                if authorization is not None:
                    request = _describe(target, 2, authorization)
                    answer = _parse(_exchange(connection, request, timeout_s)[0], "RTSP")
        except AnswerTimeout:
            return _hangs(netloc, "RTSP", timeout_s)
    return _from_answer(_heard(answer, parts), parts.path or "/", parts.username is not None)


def _heard(answer: Answer, parts: SplitResult) -> Answer:
    """``answer`` with the URL's password masked in its reason and headers (before any is cut
    short to be shown: a cut could leave part of an echoed password)."""
    password = unquote(parts.password or "")
    answer.reason = _masked(answer.reason, password)
    answer.headers = [(name, _masked(value, password)) for name, value in answer.headers]
    return answer


def _unreachable(exc: Exception, host: str, netloc: str, timeout_s: float) -> str:
    """A connection that could not be made, said plainly."""
    if isinstance(exc, (socket.gaierror, UnicodeError)):
        return f"host {host} not found (a typo, or no DNS for it here?)"
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"nothing listens on {netloc} (connection refused: the port, or the camera's service)"
        )
    if isinstance(exc, TimeoutError):
        return f"{netloc} does not answer within {timeout_s:g} s (off, unreachable, or a firewall)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{netloc}: its TLS certificate is not trusted here ({exc.verify_message})"
    return f"{netloc}: {getattr(exc, 'strerror', None) or exc}"


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
    verify: bool = True,
) -> Answer:
    """One GET of the URL ``parts`` at ``netloc`` (HTTP/1.0; the URL's user and password as
    Basic authentication; no redirect followed: a 3xx is the answer), and up to
    ``body_limit`` bytes of its body (ValueError past that). The connection and the answer
    each get ``timeout_s`` in all (TimeoutError). OSError when it cannot be made. ``verify``
    False: an https server's certificate is not checked (a camera's: FFmpeg does not)."""
    host, port = parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme.lower()]
    lines = [f"GET {_path(parts, default_path)} HTTP/1.0", f"Host: {netloc}"]
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        lines.append(f"Authorization: {basic_authorization(user, password)}")
    request = "\r\n".join([*lines, "User-Agent: facewatch", "Connection: close", "", ""]).encode()
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        if parts.scheme.lower() == "https":
            context = _tls(verify)
            with context.wrap_socket(connection, server_hostname=host) as secure:
                head, body = _exchange(secure, request, timeout_s, body_limit)
        else:
            head, body = _exchange(connection, request, timeout_s, body_limit)
    answer = _parse(head, "HTTP")
    answer.body = body
    return answer


def _tls(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _path(parts: SplitResult, default: str = "/") -> str:
    """The URL's path for a request line: what would end the line or the request (a space,
    a control character) percent-encoded."""
    return quote(parts.path or default, safe="/%:@!$&'()*+,;=~-._") + (
        f"?{quote(parts.query, safe='/%:@!$&()*+,;=~-._?')}" if parts.query else ""
    )


# content types of an answer that is a page, not a stream (MJPEG is multipart/x-mixed-replace)
WEB_PAGES = ("application/json", "application/xml", "application/xhtml+xml")


def peer_text(text: str, limit: int = 100) -> str:
    """What a peer sent (a reason phrase, a header), fit for a log line, a metric label and a
    terminal: control characters as '?', at most ``limit`` characters."""
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _http_problem(parts: SplitResult, netloc: str, timeout_s: float) -> str | None:
    """The answer to one GET of the URL (credentials from it as Basic authentication)."""
    path = parts.path or "/"
    try:
        answer = _heard(http_get(parts, netloc, timeout_s, verify=False), parts)
    except AnswerTimeout:
        return (
            f"{netloc} accepts the connection but does not answer the GET within {timeout_s:g} s "
            "(hung? restart the camera)"
        )
    if answer.code == 0:
        return "it does not answer as an HTTP server (is this the camera's HTTP port?)"
    if 300 <= answer.code < 400:
        where = peer_text(answer.header("location") or "?")
        return (
            f"the camera redirects {path} to {where} (HTTP {answer.code}: a login "
            "page? give the stream's own URL)"
        )
    if answer.code >= 300:
        said = peer_text(answer.reason)
        return _meaning(answer.code, said, "HTTP", path, parts.username is not None)
    kind = peer_text((answer.header("content-type") or "").split(";")[0].strip().lower())
    if kind.startswith("text/") or kind in WEB_PAGES:
        return (
            f"the camera answers {path} with a web page ({kind}), not a video stream: check "
            "the path in the URL (the camera's manual names its stream's)"
        )
    return None


def _describe(target: str, cseq: int, authorization: str | None = None) -> bytes:
    """An RTSP DESCRIBE of ``target``."""
    lines = [f"DESCRIBE {target} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(errors="surrogateescape")


class AnswerTimeout(TimeoutError):
    """Connected, but the answer did not come whole within the time given."""


_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*([0-9]{1,12})[ \t]*\r?$", re.M | re.I)
_CHUNKED = re.compile(rb"^transfer-encoding:.*chunked", re.M | re.I)


def _exchange(
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


def _parse(head: bytes, protocol: str) -> Answer:
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


def _authorization(answer: Answer, target: str, user: str, password: str) -> str | None:
    """The Authorization header answering the camera's challenge (Digest, else Basic)."""
    challenges = [value for name, value in answer.headers if name == "www-authenticate"]
    for challenge in challenges:
        if challenge.lower().startswith("digest"):
            return _digest(dict(_CHALLENGE.findall(challenge[6:])), target, user, password)
    if any(c.lower().startswith("basic") for c in challenges):
        return basic_authorization(user, password)
    return None


def _digest(fields: dict[str, str], target: str, user: str, password: str) -> str:
    """RFC 2617 Digest (MD5), with ``qop=auth`` when the camera offers it."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(errors="surrogateescape"), usedforsecurity=False).hexdigest()

    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
    known, asked = md5(f"{user}:{realm}:{password}"), md5(f"DESCRIBE:{target}")
    header = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{target}"'
    if "auth" in fields.get("qop", "").split(","):
        cnonce = os.urandom(8).hex()
        response = md5(f"{known}:{nonce}:00000001:{cnonce}:auth:{asked}")
        return header + f', qop=auth, nc=00000001, cnonce="{cnonce}", response="{response}"'
    return header + f', response="{md5(f"{known}:{nonce}:{asked}")}"'


def _from_answer(answer: Answer, path: str, with_credentials: bool) -> str | None:
    if answer.code == 0:
        return "it does not answer as an RTSP server (is this the camera's RTSP port?)"
    return _meaning(answer.code, peer_text(answer.reason), "RTSP", path, with_credentials)


def _meaning(
    code: int, reason: str, protocol: str, path: str, with_credentials: bool
) -> str | None:
    """What a camera's status code says about the URL (None: it serves it)."""
    if code == 404:
        return (
            f"the camera has no stream at {path} ({protocol} 404 {reason}): check the path "
            "in the URL"
        )
    if code in (401, 403):
        if with_credentials:
            return f"the camera refused the user name or password ({protocol} {code} {reason})"
        return (
            f"the camera wants a user name and password ({protocol} {code} {reason}): "
            f"{protocol.lower()}://USER:PASSWORD@HOST/PATH, the password as ${{credential:NAME}}"
        )
    if code >= 300:
        return f"the camera answered {protocol} {code} {reason}"
    return None
