"""Why a network camera cannot be opened, in its own words.

OpenCV only says that a stream did not open. When it does not, the camera is asked directly:
for ``rtsp(s)://`` one TCP connection and an RTSP DESCRIBE, for ``http(s)://`` one GET. That
tells apart a host that is not found, a port where nothing listens, a camera that does not
answer (or accepts the connection and then hangs), a camera that wants a user name and
password (401), one that refuses the URL's (401 again, after answering its challenge with
them), a path with no stream (404), and (rtsps, https) a TLS certificate that is not
trusted here, checked as OpenCV's FFmpeg is told to check it. A camera that accepts the
request is not the problem's cause: the caller says so. Other schemes (rtmp, udp, srt...) are not asked. The
requests and their answers are daemon/peer_exchange.py's.

Before OpenCV opens a stream, ``silent_stream`` asks the camera whether it answers at all
(OpenCV waits out a silent camera's open under a lock that every other camera's open needs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import ssl
from collections.abc import Iterator
from typing import NamedTuple
from urllib.parse import SplitResult, unquote, urlsplit

from daemon.peer_exchange import (
    DEFAULT_PORTS,
    TLS_SCHEMES,
    Answer,
    AnswerTimeout,
    basic_authorization,
    camera_ca_file,
    camera_tls_context,
    exchange,
    http_get,
    parse_answer,
    peer_text,
    request_path,
)
from daemon.redaction import redact_url

TIMEOUT_S = 3.0
_CHALLENGE = re.compile(r'(\w+)="?([^",]*)"?')
UNREADABLE = "the URL cannot be read (a bracket left open, or no port number after the host's ':')"


class _Camera(NamedTuple):
    parts: SplitResult
    scheme: str  # rtsp, rtsps, http or https
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
    """What is wrong with a camera's ``rtsp(s)://`` or ``http(s)://`` URL, or None when the
    camera serves it (or another scheme): then the cause lies elsewhere (e.g. the video).
    Each answer is waited for ``timeout_s`` in all, however slowly the camera sends it."""
    camera = _camera(url)
    if not isinstance(camera, _Camera):
        return camera
    parts, scheme, host, _, netloc = camera
    password = unquote(parts.password or "")
    try:
        if scheme in ("rtsp", "rtsps"):
            problem = _rtsp_problem(camera, timeout_s)
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
    when it answers anything at all (or for another scheme than rtsp(s) and http(s)). Asked
    as lightly as it can be, and only that: for ``rtsp(s)://`` one OPTIONS (a DESCRIBE sets
    up the stream, which a server may still be tearing down when the real client comes: it
    refused that one), for ``http(s)://`` one GET whose head alone is read, a TLS certificate not
    checked. A 401, a redirect, a refused handshake are answers: OpenCV may still open what
    this cannot (Digest authentication); ``stream_problem`` says why when it does not (a
    certificate not trusted too)."""
    camera = _camera(url)
    if not isinstance(camera, _Camera):
        return camera
    parts, scheme, host, _, netloc = camera
    if scheme in ("rtsp", "rtsps"):
        request = f"OPTIONS {scheme}://{netloc}{request_path(parts)} RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    else:
        request = (
            f"GET {request_path(parts)} HTTP/1.0\r\nHost: {netloc}\r\nUser-Agent: facewatch\r\n"
            "Connection: close\r\n\r\n"
        )
    try:
        with _connection(camera, timeout_s, verify=False) as connection:
            exchange(connection, request.encode(errors="surrogateescape"), timeout_s)
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


@contextlib.contextmanager
def _connection(camera: _Camera, timeout_s: float, verify: bool) -> Iterator[socket.socket]:
    """A connection to the camera; for rtsps and https in TLS, its certificate checked as
    OpenCV's FFmpeg checks it (``verify``: ssl.SSLCertVerificationError when it fails)."""
    with socket.create_connection((camera.host, camera.port), timeout=timeout_s) as connection:
        if camera.scheme not in TLS_SCHEMES:
            yield connection
            return
        context = camera_tls_context(verify)
        with context.wrap_socket(connection, server_hostname=camera.host) as secure:
            yield secure


def _rtsp_problem(camera: _Camera, timeout_s: float) -> str | None:
    """One DESCRIBE (two, answering the camera's challenge with the URL's user)."""
    parts, netloc = camera.parts, camera.netloc
    target = f"{parts.scheme.lower()}://{netloc}{request_path(parts)}"
    user = (unquote(parts.username or ""), unquote(parts.password or ""))
    with _connection(camera, timeout_s, verify=True) as connection:
        try:
            answer = parse_answer(exchange(connection, _describe(target, 1), timeout_s)[0], "RTSP")
            if answer.code == 401 and parts.username is not None:
                authorization = _authorization(answer, target, *user)
                if authorization is not None:
                    request = _describe(target, 2, authorization)
                    answer = parse_answer(exchange(connection, request, timeout_s)[0], "RTSP")
        except AnswerTimeout:
            return _hangs(netloc, "RTSP", timeout_s)
    return _from_answer(_heard(answer, parts), parts)


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
        ca_file = camera_ca_file()
        trusted = ca_file or "no CA certificates: none found here"
        if ca_file is not None and not os.access(ca_file, os.R_OK):
            trusted += ", which cannot be read"
        return (
            f"{netloc}: its TLS certificate is not trusted here ({exc.verify_message}; checked "
            f"against {trusted}): add its CA certificate to this host's "
            "(update-ca-certificates), or SSL_CERT_FILE in the service's environment naming "
            "a file of them; or use its unencrypted rtsp:// or http:// stream"
        )
    return f"{netloc}: {getattr(exc, 'strerror', None) or exc}"


# content types of an answer that is a page, not a stream (MJPEG is multipart/x-mixed-replace)
WEB_PAGES = ("application/json", "application/xml", "application/xhtml+xml")


def _http_problem(parts: SplitResult, netloc: str, timeout_s: float) -> str | None:
    """The answer to one GET of the URL (credentials from it as Basic authentication)."""
    path = parts.path or "/"
    try:
        context = camera_tls_context(verify=True)
        answer = _heard(http_get(parts, netloc, timeout_s, context=context), parts)
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
        return _meaning(answer.code, said, "HTTP", parts)
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


def _from_answer(answer: Answer, parts: SplitResult) -> str | None:
    if answer.code == 0:
        return "it does not answer as an RTSP server (is this the camera's RTSP port?)"
    return _meaning(answer.code, peer_text(answer.reason), "RTSP", parts)


def _meaning(code: int, reason: str, protocol: str, parts: SplitResult) -> str | None:
    """What a camera's status code says about the URL ``parts`` (None: it serves it)."""
    path, scheme = parts.path or "/", parts.scheme.lower()
    if code == 404:
        return (
            f"the camera has no stream at {path} ({protocol} 404 {reason}): check the path "
            "in the URL"
        )
    if code in (401, 403):
        if parts.username is not None:
            return f"the camera refused the user name or password ({protocol} {code} {reason})"
        return (
            f"the camera wants a user name and password ({protocol} {code} {reason}): "
            f"{scheme}://USER:PASSWORD@HOST/PATH, the password as ${{credential:NAME}}"
        )
    if code >= 300:
        return f"the camera answered {protocol} {code} {reason}"
    return None
