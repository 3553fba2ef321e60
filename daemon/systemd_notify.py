"""systemd's side of the daemon: notifications on ``$NOTIFY_SOCKET`` and when the watchdog is
fed (``Type=notify``, ``WatchdogSec=`` in systemd/facewatch.service)."""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's notification socket, if there is one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        logger.warning("cannot notify systemd (%s): %s", address, exc)
        return False
    return True


def watchdog_healthy(
    now: float, last_round: float, waiting_since: float | None, stall_s: float
) -> bool:
    """Whether to feed systemd's watchdog: frames flow. The scheduler must come round (a
    hung engine call stops it), and frames that wait must be taken within ``stall_s``
    (``waiting_since``: since when some have waited; None: none wait). A camera slower
    than a frame in ``stall_s``, or every camera down, leaves nothing waiting: nothing to
    process, and a restart would not help (the cameras' own reconnection and the
    CameraDown alert deal with that)."""
    if now - last_round >= stall_s:
        return False
    return waiting_since is None or now - waiting_since < stall_s
