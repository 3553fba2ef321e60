"""Why a network camera cannot be opened, in its own words.

OpenCV only says that a stream did not open. When it does not, the camera is asked directly:
for ``rtsp://`` one TCP connection and an RTSP DESCRIBE, for ``http(s)://`` one GET. That
tells apart a host that is not found, a port where nothing listens, a camera that does not
answer (or accepts the connection and then hangs), a camera that wants a user name and
password (401), one that refuses the URL's (401 again, after answering its challenge with
them), and a path with no stream (404). A camera that accepts the request is not the
problem's cause: the caller says so. Other schemes (rtmp, udp, srt...) are not asked.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from daemon.config_file import redact_url

TIMEOUT_S = 3.0
_CHALLENGE = re.compile(r'(\w+)="?([^",]*)"?')
UNREADABLE = "the URL cannot be read (a bracket left open, or no port number after the host's ':')"


def stream_problem(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """What is wrong with a camera's ``rtsp://`` or ``http(s)://`` URL, or None when the
    camera serves it (or another scheme): then the cause lies elsewhere (e.g. the video)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # its text may hold the password: not repeated
        return UNREADABLE
    scheme = parts.scheme.lower()
    if not host or scheme not in ("rtsp", "http", "https"):
        return None
    port = port if port is not None else {"rtsp": 554, "http": 80, "https": 443}[scheme]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if scheme != "rtsp":
        return _http_problem(parts, netloc, timeout_s)
    target = urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))
    user = (unquote(parts.username or ""), unquote(parts.password or ""))
    try:
        connection = socket.create_connection((host, port), timeout=timeout_s)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a host name IDNA refuses
        return _unreachable(exc, host, netloc, timeout_s)
    try:
        with connection:
            connection.settimeout(timeout_s)
            answer = _describe(connection, target, 1)
            if _status(answer)[0] == 401 and parts.username is not None:
                authorization = _authorization(answer, target, *user)
                if authorization is not None:
                    answer = _describe(connection, target, 2, authorization)
    except TimeoutError:
        return (
            f"{netloc} accepts the connection but its RTSP service does not answer within "
            f"{timeout_s:g} s (hung? restart the camera)"
        )
    except OSError as exc:
        return f"{netloc}: {exc.strerror or exc}"
    return _from_answer(answer, parts.path or "/", parts.username is not None)


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
    return f"{netloc}: {getattr(exc, 'strerror', None) or exc}"


def basic_authorization(user: str, password: str) -> str:
    """The Authorization header of HTTP / RTSP Basic authentication."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_request(
    parts: SplitResult, netloc: str, default_path: str = "/"
) -> urllib.request.Request:
    """A GET of the URL ``parts`` at ``netloc`` (no user and password in it: those, when the
    URL has them, go as Basic authentication)."""
    plain = urlunsplit((parts.scheme, netloc, parts.path or default_path, parts.query, ""))
    request = urllib.request.Request(plain, method="GET")
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        request.add_header("Authorization", basic_authorization(user, password))
    return request


# content types of an answer that is a page, not a stream (MJPEG is multipart/x-mixed-replace)
WEB_PAGES = ("application/json", "application/xml", "application/xhtml+xml")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer (HTTPError 3xx), not followed: the credentials of a request
    must not go on to whatever host the peer names."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def open_url(request: urllib.request.Request, timeout_s: float) -> Any:
    """``urlopen`` that follows no redirect (an HTTPError 3xx instead)."""
    return _OPENER.open(request, timeout=timeout_s)


def peer_text(text: str, limit: int = 100) -> str:
    """What a peer sent (a reason phrase, a header), fit for a log line, a metric label and a
    terminal: control characters as '?', at most ``limit`` characters."""
    shown = "".join(c if c.isprintable() else "?" for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _http_problem(parts: SplitResult, netloc: str, timeout_s: float) -> str | None:
    """The answer to one GET of the URL (credentials from it as Basic authentication)."""
    request = http_request(parts, netloc)
    try:
        with open_url(request, timeout_s) as answer:
            kind = peer_text(answer.headers.get_content_type())
            if kind.startswith("text/") or kind in WEB_PAGES:
                return (
                    f"the camera answers {parts.path or '/'} with a web page ({kind}), not a "
                    "video stream: check the path in the URL (the camera's manual names its "
                    "stream's)"
                )
            return None
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            where = redact_url(peer_text(exc.headers.get("Location", "?")))
            return (
                f"the camera redirects {parts.path or '/'} to {where} (HTTP {exc.code}: a login "
                "page? give the stream's own URL)"
            )
        said = peer_text(str(exc.reason))
        return _meaning(exc.code, said, "HTTP", parts.path or "/", parts.username is not None)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, OSError):
            return _unreachable(exc.reason, parts.hostname or "", netloc, timeout_s)
        return f"{netloc}: {peer_text(str(exc.reason))}"
    except (OSError, ValueError) as exc:  # a timeout while reading, a bad answer
        return f"{netloc}: {peer_text(str(exc))}"


def _describe(
    connection: socket.socket, target: str, cseq: int, authorization: str | None = None
) -> bytes:
    """The head of the camera's answer to DESCRIBE ``target``."""
    lines = [f"DESCRIBE {target} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer and len(answer) < 65536:
        chunk = connection.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer.split(b"\r\n\r\n", 1)[0]


def _status(answer: bytes) -> tuple[int, str]:
    """The answer's status code and reason; code 0 when it is not an RTSP answer."""
    status = answer.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    if len(status) < 2 or not status[0].startswith("RTSP/") or not status[1].isdigit():
        return 0, ""
    return int(status[1]), peer_text((status[2] if len(status) > 2 else "").strip())


def _authorization(answer: bytes, target: str, user: str, password: str) -> str | None:
    """The Authorization header answering the camera's challenge (Digest, else Basic)."""
    challenges = [
        line.split(b":", 1)[1].decode("latin-1").strip()
        for line in answer.split(b"\r\n")[1:]
        if line.lower().startswith(b"www-authenticate:")
    ]
    for challenge in challenges:
        if challenge.lower().startswith("digest"):
            return _digest(dict(_CHALLENGE.findall(challenge[6:])), target, user, password)
    if any(c.lower().startswith("basic") for c in challenges):
        return basic_authorization(user, password)
    return None


def _digest(fields: dict[str, str], target: str, user: str, password: str) -> str:
    """RFC 2617 Digest (MD5), with ``qop=auth`` when the camera offers it."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
    known, asked = md5(f"{user}:{realm}:{password}"), md5(f"DESCRIBE:{target}")
    header = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{target}"'
    if "auth" in fields.get("qop", "").split(","):
        cnonce = os.urandom(8).hex()
        response = md5(f"{known}:{nonce}:00000001:{cnonce}:auth:{asked}")
        return header + f', qop=auth, nc=00000001, cnonce="{cnonce}", response="{response}"'
    return header + f', response="{md5(f"{known}:{nonce}:{asked}")}"'


def _from_answer(answer: bytes, path: str, with_credentials: bool) -> str | None:
    code, reason = _status(answer)
    if code == 0:
        return "it does not answer as an RTSP server (is this the camera's RTSP port?)"
    return _meaning(code, reason, "RTSP", path, with_credentials)


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
