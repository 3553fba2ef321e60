"""Real services for the integration tests, started on 127.0.0.1 and stopped by the tests:
mosquitto, GStreamer's RTSP server, an HTTP MJPEG camera, the facewatch daemon, and an MQTT
subscriber."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from daemon.cli import main as facewatch_main
from daemon.config_file import url_host
from tests.conftest import REPO

PEOPLE = REPO / "configs" / "demo" / "people"
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
FACEWATCH = Path(sys.executable).with_name("facewatch")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    """``predicate()``'s first true value within ``timeout_s``. A predicate that cannot be
    evaluated yet (the daemon not listening, a metric not on its page yet: OSError,
    KeyError) counts as false; the timeout's message gives the last such error."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, KeyError) as exc:
            value, last_error = None, f" (last: {type(exc).__name__}: {exc})"
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{last_error}")


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds the socket that listens on TCP ``port`` (Linux's
    /proc): a port that merely answers may be another process's, one that took the number
    between ``free_port()`` and the start."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return True
    return False


class Process:
    """A child process with its output in a file; ``stop`` is SIGTERM then SIGKILL.
    ``Process.running`` holds the started ones, for the tests' clean-up."""

    running: ClassVar[set[Process]] = set()
    port_taken_says: ClassVar[str] = "ddress already in use"  # (what its log says then)

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args, self.log_path, self.env = args, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        out.close()
        Process.running.add(self)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int | None:
        Process.running.discard(self)
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def await_listening(self, port: int, timeout_s: float, what: str) -> bool:
        """Wait until this process listens on ``port``: True; False if it exited first (a
        port taken by someone else: its log says so)."""

        def state() -> str | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return "exited"
            return "listening" if _listens(self.proc.pid, port) else None

        return wait_for(state, timeout_s, f"{what} to listen on port {port}") == "listening"

    def start_on_a_free_port(self, what: str, timeout_s: float, port_given: bool) -> None:
        """``start()``, then wait until this process itself listens on ``self.port``. If the
        port, picked free, was taken in the meantime: again on another (``_use_port``)."""
        for _ in range(5):
            Process.start(self)
            if self.await_listening(self.port, timeout_s, what):
                return
            self.stop()
            if port_given or self.port_taken_says not in self.log():
                break
            self._use_port(free_port())
        raise AssertionError(f"{what} exited ({self.log_path}):\n{self.log()[-2000:]}")

    def _use_port(self, port: int) -> None:
        raise NotImplementedError


class LocalServer:
    """A TCP server on a free port of 127.0.0.1: each connection goes to ``_take``; ``close()``
    closes it and the connections kept in ``_open``. (A subclass sets what ``_take`` reads
    before this ``__init__``: the first connection may come at once.)"""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self._take(client)

    def _take(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()
        for sock in self._open:
            sock.close()


def openssl(*args: str, cwd: Path) -> None:
    """The openssl command, in ``cwd`` (for the tests' certificates)."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def certificate_authority(folder: Path, name: str) -> Path:
    """A self-signed CA (NAME.crt, NAME.key) in ``folder``."""
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.crt"


def signed_certificate(folder: Path, ca: str, name: str) -> None:
    """NAME.crt and NAME.key in ``folder``, for 127.0.0.1, signed by the CA ``ca``."""
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder,
    )  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=folder,
    )  # fmt: skip


def tls_generation(folder: Path) -> Path:
    """A CA with a server and a client certificate for 127.0.0.1 (ca, server, client .crt
    and .key in ``folder``): one generation of a broker's and its clients' TLS files, or a
    camera's."""
    folder.mkdir()
    certificate_authority(folder, "ca")
    for name in ("server", "client"):
        signed_certificate(folder, "ca", name)
    return folder


def open_trusting(url: str, ca_file: Path | None, monkeypatch: Any) -> tuple[Any, str]:
    """What a camera reader gets from ``url`` on a host whose CA certificates are those of
    ``ca_file`` (None: this host's own), SSL_CERT_FILE unset: its first frame and "", or
    None and why not."""
    from daemon import peer_exchange
    from daemon.camera_open import open_capture

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    if ca_file is not None:
        monkeypatch.setattr(peer_exchange, "CA_BUNDLES", (str(ca_file),))
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)  # (made again from it)
    try:
        capture = open_capture(url)
    except OSError as exc:
        return None, str(exc)
    try:
        ok, image = capture.read()
    finally:
        capture.release()
    return (image, "") if ok else (None, "opened, but no frame read")


class HttpMjpegCamera:
    """An HTTP camera as cheap ones (and ESP32-CAM boards) are: at /video.mjpg, JPEG pictures
    one after another in one multipart/x-mixed-replace response, ``fps`` a second, in a loop;
    any other path is a 404. ``tls``: a folder of tls_generation's, whose server certificate
    it serves over https. ``url``; ``close()`` stops it."""

    def __init__(self, images: list[np.ndarray], fps: float, tls: Path | None = None) -> None:
        jpegs = [cv2.imencode(".jpg", image)[1].tobytes() for image in images]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/video.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client went away
                    for jpeg in itertools.cycle(jpegs):
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                        self.wfile.write(head.encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        time.sleep(1 / fps)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls / "server.crt", tls / "server.key")
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/video.mjpg"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Partition(LocalServer):
    """A TCP relay to a local port that can cut the link silently. ``cut()``: it relays
    nothing more and keeps the connections open, so a client notices only by its keepalive,
    and it refuses new ones; ``swallowed`` holds what it did not relay. ``heal()``: it closes
    the cut connections and relays again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._cut = threading.Event()
        self.swallowed = bytearray()
        super().__init__()

    def _take(self, client: socket.socket) -> None:
        if self._cut.is_set():
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self._open += [client, upstream]
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self._cut.is_set():
                    self.swallowed += data  # lost in the partition
                    continue
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()
        self._cut.clear()

    def close(self) -> None:
        self.heal()
        self.listener.close()


class HungCamera(LocalServer):
    """An RTSP camera that accepts connections and then never answers, as a hung camera or
    NVR does (or one mid-reboot). ``answers_options``: it answers OPTIONS (whether it is
    there) and hangs at the DESCRIBE that begins a stream. ``requests``: each request's
    first line, with when it came (monotonic)."""

    def __init__(self, answers_options: bool = False) -> None:
        self.answers_options = answers_options
        self.requests: list[tuple[float, str]] = []
        super().__init__()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"

    def _take(self, client: socket.socket) -> None:
        self._open.append(client)
        threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        data = b""
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                data += chunk
                while b"\r\n\r\n" in data:
                    request, _, data = data.partition(b"\r\n\r\n")
                    line = request.split(b"\r\n")[0].decode(errors="replace")
                    self.requests.append((time.monotonic(), line))
                    if self.answers_options and line.startswith("OPTIONS"):
                        cseq = next(
                            (h for h in request.split(b"\r\n") if h.lower().startswith(b"cseq")),
                            b"CSeq: 1",
                        )
                        client.sendall(
                            b"RTSP/1.0 200 OK\r\n" + cseq + b"\r\nPublic: OPTIONS, DESCRIBE, "
                            b"SETUP, PLAY, TEARDOWN\r\n\r\n"
                        )

    def asked(self, method: str) -> list[float]:
        """When each ``method`` request came."""
        return [when for when, line in self.requests if line.startswith(method)]


class Mosquitto(Process):
    """A broker on ``port``, or on a free one, of ``address``. Started again (a test that
    killed it), it is on the same port: the clients' config names it."""

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        extra_conf: str = "",
        address: str = "127.0.0.1",
    ) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.binary).exists():
            pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
        self.folder, self.extra_conf, self.port_given = folder, extra_conf, port is not None
        self.address = address
        super().__init__([], folder / "mosquitto.log")
        self._use_port(port or free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        conf = self.folder / f"mosquitto-{port}.conf"
        conf.write_text(
            f"listener {port} {self.address}\npersistence false\nlog_type error\n"
            # run as root, mosquitto would become user 'mosquitto' before reading the
            # password file in the test's private folder
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            + (self.extra_conf or "allow_anonymous true\n")
        )
        self.args = [self.binary, "-c", str(conf)]
        self.log_path = self.folder / f"mosquitto-{port}.log"

    def start(self) -> None:
        self.start_on_a_free_port(f"mosquitto on port {self.port}", 10, self.port_given)
        self.port_given = True  # from now on, the clients know this port


class RtspServer(Process):
    port_taken_says = "cannot listen on"  # (GLib does not say why)

    def __init__(
        self,
        folder: Path,
        clips: dict[str, Path],
        port: int | None = None,
        user: str | None = None,
        no_keyframes: bool = False,
        address: str = "127.0.0.1",
        audio: bool = False,
        tls: Path | None = None,
    ) -> None:
        """``user``: NAME:PASSWORD, asked for with Digest authentication. ``no_keyframes``:
        the clips are served without their keyframes (a stream that never decodes).
        ``audio``: each stream has an audio track too. ``tls``: a folder of
        tls_generation's, whose server certificate it serves rtsps:// with."""
        if (
            not Path(SYSTEM_PYTHON).exists()
            or subprocess.run(
                [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                capture_output=True,
                timeout=300,
            ).returncode
        ):
            pytest.skip("GStreamer's RTSP server is not installed (gir1.2-gst-rtsp-server-1.0)")
        self.folder, self.port_given = folder, port is not None
        mounts = [f"{name}={path}" for name, path in clips.items()]
        self.address = address
        self.base_args = [SYSTEM_PYTHON, str(RTSP_SERVER), "--address", address, *mounts]
        if user is not None:
            self.base_args[2:2] = ["--user", user]
        if no_keyframes:
            self.base_args[2:2] = ["--no-keyframes"]
        if audio:
            self.base_args[2:2] = ["--audio"]
        if tls is not None:
            self.base_args[2:2] = ["--tls", f"{tls / 'server.crt'},{tls / 'server.key'}"]
        self.scheme = "rtsp" if tls is None else "rtsps"
        super().__init__([], folder / "rtsp.log")
        self._use_port(port or free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.args = [*self.base_args[:2], "--port", str(port), *self.base_args[2:]]
        self.log_path = self.folder / f"rtsp-{port}.log"

    def url(self, name: str) -> str:
        return f"{self.scheme}://{url_host(self.address)}:{self.port}/{name}"

    def start(self) -> None:
        """Started again (a test that stopped it), it is on the same port: the URLs name it."""
        self.start_on_a_free_port(f"the RTSP server on port {self.port}", 30, self.port_given)
        self.port_given = True
        wait_for(lambda: "ready" in self.log(), 30, "the RTSP server")


class Daemon(Process):
    """``facewatch run`` on a config written from ``settings``."""

    def __init__(
        self, folder: Path, settings: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.folder = folder
        self.config_path = folder / "facewatch.yaml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.metrics_port = settings.get("metrics", {}).get("port")
        self.metrics_host = url_host(settings.get("metrics", {}).get("address", "127.0.0.1"))
        full_env = dict(os.environ, **(env or {}))
        args = [str(FACEWATCH), "run", "--config", str(self.config_path)]
        super().__init__(args, folder / "daemon.log", env=full_env)

    def metrics(self) -> dict[str, float]:
        """The /metrics page as {'name{labels}': value}."""
        url = f"http://{self.metrics_host}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def metric(self, name: str) -> float:
        """One sample of /metrics (``name{labels}``). A page without it raises KeyError, a
        daemon that does not answer OSError: a renamed metric or a dead daemon fails the
        test instead of reading as 0 (``wait_for`` waits through both)."""
        values = self.metrics()
        if name not in values:
            family = name.partition("{")[0]
            similar = sorted(k for k in values if k.startswith(family))
            raise KeyError(f"{name} is not on /metrics (of that family: {similar})")
        return values[name]


class Subscriber:
    """An MQTT client that records every message under ``topic``."""

    def __init__(
        self,
        port: int,
        topic: str = "#",
        persistent_id: str | None = None,
        host: str = "127.0.0.1",
        **tls: Any,
    ) -> None:
        """``persistent_id``: a persistent session under that client id, which the broker
        keeps (subscription and queued messages) across the subscriber's and, with
        persistence, its own restarts."""
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        if persistent_id:
            self.client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=persistent_id, clean_session=False
            )
            self.client.reconnect_delay_set(1, 2)
        else:
            self.client = paho.Client(CallbackAPIVersion.VERSION2)
        if tls.get("username"):
            self.client.username_pw_set(tls["username"], tls.get("password"))
        if tls.get("ca_file"):  # (cert_file, key_file: for a broker that asks for them)
            self.client.tls_set(tls["ca_file"], tls.get("cert_file"), tls.get("key_file"))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if "/events/" in t]

    def last(self, topic: str) -> bytes | None:
        with self._lock:
            found = [p for t, p, _ in self.messages if t == topic]
        return found[-1] if found else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def daemon_settings(
    cameras: list[dict[str, Any]], mqtt_port: int, folder: Path, **sections: Any
) -> dict[str, Any]:
    """A daemon config for the tests: detection only unless ``recognition`` is given."""
    settings: dict[str, Any] = {
        "node_id": "test",
        "cameras": cameras,
        "recognition": {"model": None},
        "engines": {"threads": 2, "mtcnn_dir": str(REPO / "models" / "mtcnn")},
        "mqtt": {"port": mqtt_port, "spool_dir": str(folder / "spool"), "keepalive_s": 5},
        "metrics": {"port": free_port()},
        "tracking": {"confirm_frames": 2, "lost_after_s": 1.0},
        "logging": {"level": "INFO"},
    }
    for name, value in sections.items():
        settings[name] = {**settings.get(name, {}), **value}
    return settings


def enroll(model: Path, gallery: Path, person: str) -> None:
    """Enroll one of the demo people (configs/demo/people) into ``gallery``."""
    code = facewatch_main(
        ["enroll", "--name", person, str(PEOPLE / person / "reference.png"), "--model", str(model),
         "--gallery", str(gallery), "--threads", "2", "--no-progress"]
    )  # fmt: skip
    assert code == 0


class Prometheus(Process):
    """A real Prometheus (Debian package) scraping ``targets`` every second, with the shipped
    scrape config (configs/prometheus/prometheus.yml) and alert rules."""

    def __init__(self, folder: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            pytest.skip("Prometheus is not installed (apt-get install prometheus; .ci/run does)")
        shipped = REPO / "configs" / "prometheus" / "prometheus.yml"
        config = yaml.safe_load(shipped.read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(shipped.parent / name) for name in config["rule_files"]]
        config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
        config_path = folder / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.base_args = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
        ]
        super().__init__([], folder / "prometheus.log")
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.args = [*self.base_args, f"--web.listen-address=127.0.0.1:{port}"]

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/PATH; the ``data`` of a successful answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def start(self) -> None:
        self.start_on_a_free_port("Prometheus", 30, port_given=False)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"Prometheus exited:\n{self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                    return True
            except OSError:
                return False

        wait_for(ready, 30, "Prometheus to be ready", every_s=0.3)


def fill(disk: Path) -> None:
    """Every block and every inode of ``disk`` taken."""
    with contextlib.suppress(OSError), (disk / "filler").open("wb") as out:
        while True:
            out.write(bytes(4096))
            out.flush()
    with contextlib.suppress(OSError):
        for k in range(1000):
            (disk / f"inode-{k}").touch()
