"""Why an RTSP camera cannot be opened, in its own words.

OpenCV only says that a stream did not open. When it does not, one plain TCP connection and
an RTSP DESCRIBE (no credentials sent) tell apart a host that is not found, a port where
nothing listens, a camera that does not answer, a path with no stream (404) and a camera
that wants a user name and password (401).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

TIMEOUT_S = 3.0


def rtsp_problem(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """What is wrong with an ``rtsp://`` URL, or None when the camera serves the stream (or
    the URL is not plain RTSP): then the cause lies elsewhere (e.g. the video itself)."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme.lower() != "rtsp" or not host:
        return None
    try:
        port = parts.port or 554
    except ValueError:
        return "the port in the URL is not a number from 1 to 65535"
    where = f"{host}:{port}"
    netloc = f"[{host}]:{port}" if ":" in host else where
    target = urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))
    request = f"DESCRIBE {target} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.settimeout(timeout_s)
            connection.sendall(request.encode())
            answer = connection.recv(4096)
    except socket.gaierror:
        return f"host {host} not found (a typo, or no DNS for it here?)"
    except ConnectionRefusedError:
        return f"nothing listens on {where} (connection refused: the port, or the camera's RTSP service)"
    except TimeoutError:
        return f"{where} does not answer within {timeout_s:g} s (off, unreachable, or a firewall)"
    except OSError as exc:
        return f"{where}: {exc.strerror or exc}"
    return _from_answer(answer, parts.path or "/", parts.username is not None)


def _from_answer(answer: bytes, path: str, with_credentials: bool) -> str | None:
    status = answer.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    if len(status) < 2 or not status[0].startswith("RTSP/") or not status[1].isdigit():
        return "it does not answer as an RTSP server (is this the camera's RTSP port?)"
    code, reason = int(status[1]), (status[2] if len(status) > 2 else "").strip()
    if code == 404:
        return f"the camera has no stream at {path} (RTSP 404 {reason}): check the path in the URL"
    if code == 401:
        if with_credentials:
            return f"the camera refused the user name or password (RTSP 401 {reason})"
        return (
            f"the camera wants a user name and password (RTSP 401 {reason}): "
            "rtsp://USER:PASSWORD@HOST/PATH, the password as ${credential:NAME}"
        )
    if code >= 300:
        return f"the camera answered RTSP {code} {reason}"
    return None
