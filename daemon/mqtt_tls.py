"""The MQTT connection's TLS files (``mqtt.tls``): the CA, client certificate and key, loaded
into one SSL context, and loaded again when they were renewed in place (replaced at the same
path by step-ca or by hand, or a symlink there pointed at new files by certbot or
cert-manager), so that the next connection uses them without a restart.

paho keeps the SSL context it is given for every reconnection: it is given a
``RenewableContext``, which wraps each connection's socket with the latest context, after a
look at the files (``before_connect``).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from daemon.config_outputs import TlsConfig

FILE_KEYS = ("ca_file", "cert_file", "key_file")

# what tells a renewed file from the one loaded: a file replaced (a new inode, as a rename
# into place or a re-pointed symlink leaves it), or written over (its time or size)
Stamp = tuple[int, int, int] | None
# a broker refuses a client certificate within this long of the handshake (its alert)
ALERT_WAIT_S = 1.0


# OpenSSL's reasons for a key that is not the certificate's (one of another type: no
# certificate assigned)
KEY_MISMATCH = frozenset({"KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"})


class TlsFileError(ValueError):
    """``mqtt.tls`` files that cannot be used: the message names each one's key and path
    (``mqtt.tls.ca_file: PATH: not a PEM certificate (...)``), '; ' between them."""


class _Encrypted(Exception):
    """A key that asks for a passphrase (OpenSSL would prompt on the terminal for it)."""


def load_context(tls: TlsConfig) -> ssl.SSLContext:
    """The context as paho's ``tls_set`` made it, so that a broker it accepted still is:
    not ``ssl.create_default_context``, which from Python 3.13 refuses a CA without a key
    usage (VERIFY_X509_STRICT), as ``openssl req -x509`` makes one. Files that cannot be
    used raise TlsFileError, naming every one (``file_problems``)."""
    context, found = _built(tls)
    if found:
        raise TlsFileError("; ".join(found))
    return context


def file_problems(tls: TlsConfig) -> list[str]:
    """Each ``mqtt.tls`` file that ``run`` could not use, one line each, "mqtt.tls.KEY:
    PATH: why": not there, unreadable, not a PEM certificate, not a private key, or not the
    key of the certificate (what ``validate-config`` and a SIGHUP say)."""
    return _built(tls)[1]


def _built(tls: TlsConfig) -> tuple[ssl.SSLContext, list[str]]:
    """The context, loaded file by file, and what is wrong with each file ([] when none)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # (checks the host name)
    context.check_hostname = not tls.insecure
    context.verify_mode = ssl.CERT_REQUIRED
    found = []
    if tls.ca_file:
        ca_file = tls.ca_file
        found += _unusable("ca_file", ca_file, lambda: context.load_verify_locations(ca_file))
    else:
        context.load_default_certs()  # the system's CAs
    if tls.cert_file:
        found += _client_problems(context, tls.cert_file, tls.key_file)
    return context, found


def _client_problems(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> list[str]:
    """The client certificate and key loaded into ``context``: the certificate is read on
    its own first, so that a bad one is not blamed on the key (OpenSSL says "PEM lib" for
    either)."""
    alone = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    found = _unusable("cert_file", cert_file, lambda: alone.load_verify_locations(cert_file))
    if key_file:
        found += _unusable("key_file", key_file, lambda: open(key_file, "rb").close())
    if found:
        return found
    holder = ("key_file", key_file) if key_file else ("cert_file", cert_file)
    said = f"mqtt.tls.{holder[0]}: {holder[1]}"
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _Encrypted:
        return [
            f"{said}: an encrypted private key (it asks for a passphrase, which facewatch "
            "has no setting for): give it the key unencrypted (openssl pkey -in KEY -out "
            "NEW.key), readable by the service's user alone"
        ]
    except ssl.SSLError as exc:
        if not key_file:
            why = "holds no private key of its certificate, and mqtt.tls.key_file is not set"
        elif exc.reason in KEY_MISMATCH:
            why = f"not the private key of mqtt.tls.cert_file {cert_file}"
        else:
            why = "not a PEM private key"
        return [f"{said}: {why} ({_ssl_said(exc)})"]
    return []


def _no_passphrase() -> str:
    raise _Encrypted


def _unusable(key: str, path: str, load: Callable[[], object]) -> list[str]:
    """Why the file at ``path`` (``mqtt.tls.KEY``) cannot be used, as ``load`` finds it
    ([] when it can): not there, unreadable, or, for a certificate, not a PEM one."""
    try:
        load()
    except ssl.SSLError as exc:
        return [f"mqtt.tls.{key}: {path}: not a PEM certificate ({_ssl_said(exc)})"]
    except FileNotFoundError:
        return [f"mqtt.tls.{key}: {path}: not found"]
    except OSError as exc:
        return [f"mqtt.tls.{key}: {path}: cannot be read ({exc.strerror or exc})"]
    return []


def _ssl_said(exc: ssl.SSLError) -> str:
    """OpenSSL's reason, without the line of CPython's C source it was raised on."""
    return re.sub(r" \(_ssl\.c:\d+\)$", "", str(exc))


def _stamp(path: str) -> Stamp:
    try:
        status = os.stat(path)
    except OSError:  # (gone for a moment while it is replaced: a change too)
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)


class RenewableContext:
    """The SSL context of the ``mqtt.tls`` files as last loaded, given to paho in place of
    an ``ssl.SSLContext``: it wraps each new connection's socket with that context."""

    def __init__(self, tls: TlsConfig, before_connect: Callable[[], object] | None = None) -> None:
        """Loads the files now: a ``TlsFileError`` names each that cannot be used.
        ``before_connect`` is called before each connection's handshake (the publisher loads
        renewed files there: ``renew``)."""
        self.tls, self.before_connect = tls, before_connect
        self._lock = threading.Lock()
        self._stamps = self._stamp_files()  # before the load: a change meanwhile is seen
        self.current = load_context(self.tls)

    def _files(self) -> dict[str, str]:
        """``{'cert_file': PATH, ...}`` of the files the config names."""
        return {key: path for key in FILE_KEYS if (path := getattr(self.tls, key))}

    def _stamp_files(self) -> dict[str, Stamp]:
        return {key: _stamp(path) for key, path in self._files().items()}

    def _changed(self, stamps: dict[str, Stamp]) -> list[str]:
        """The keys (``mqtt.tls.ca_file``...) of the files changed since they were loaded."""
        return [f"mqtt.tls.{key}" for key, stamp in stamps.items() if self._stamps[key] != stamp]

    def renew(self) -> list[str]:
        """Load the files again when any changed since they were loaded; the keys of those
        that changed ([] when none did). Files that cannot be used (a new certificate whose
        key is not written yet) raise ValueError, naming the keys that changed and why: the loaded
        context stays in use, and the next call tries them again."""
        with self._lock:
            stamps = self._stamp_files()
            if stamps == self._stamps:
                return []
            changed = self._changed(stamps)
            try:
                self.current = load_context(self.tls)
            except TlsFileError as exc:
                raise ValueError(
                    f"{', '.join(changed)} changed since loaded, but cannot be used: {exc}"
                ) from exc
            self._stamps = stamps
            return changed

    def handshake(self, sock: socket.socket, host: str) -> ssl.SSLError | None:
        """A TLS handshake on ``sock`` with the context in use (an ``ssl.SSLError`` says why
        it fails), then one read: the broker's refusal of the client certificate, returned,
        which TLS 1.3 sends after the client's handshake has ended (None when none came
        within ALERT_WAIT_S); then the socket is closed."""
        with self.current.wrap_socket(sock, server_hostname=host) as connection:
            connection.settimeout(ALERT_WAIT_S)
            try:
                connection.recv(1)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return None  # (closed: no refusal)
            except ssl.SSLError as exc:
                return exc
            except OSError:  # (nothing came: a broker waits for the client's CONNECT)
                return None
        return None

    # paho's use of its context: wrap_socket and check_hostname
    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if self.before_connect is not None:
            self.before_connect()
        return self.current.wrap_socket(sock, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "current":  # (not loaded yet)
            raise AttributeError(name)
        return getattr(self.current, name)
