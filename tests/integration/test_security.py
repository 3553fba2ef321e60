"""Security end to end: MQTT over TLS with a password (a real mosquitto and a self-signed CA),
bad credentials and an untrusted CA reported clearly, and no secret in any log or message."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from daemon import metrics, mqtt_delivery
from daemon.cli import main
from daemon.config_changes import config_changes
from daemon.config_file import load_config
from daemon.config_outputs import MqttConfig, TlsConfig
from daemon.mqtt import MqttPublisher
from daemon.mqtt_tls import RenewableContext
from daemon.spool import Spool
from tests.conftest import REPO
from tests.integration.services import (
    FACEWATCH,
    Daemon,
    Mosquitto,
    RtspServer,
    Subscriber,
    certificate_authority,
    daemon_settings,
    enroll,
    signed_certificate,
    tls_generation,
    wait_for,
)

pytestmark = pytest.mark.slow

CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"
MQTT_SECRET = "mqtt-Secret-7f3a9"
CAMERA_SECRET = "cam-Secret-51c2e"
USER = "facewatch"


@pytest.fixture
def tls_broker(tmp_path):
    """mosquitto with TLS only, no anonymous clients, one user with MQTT_SECRET."""
    folder = tmp_path / "broker"
    folder.mkdir()
    certificate_authority(folder, "ca")
    signed_certificate(folder, "ca", "server")
    passwords = folder / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), USER, MQTT_SECRET], check=True, timeout=60
    )
    passwords.chmod(0o600)
    server = Mosquitto(
        folder,
        extra_conf=(
            f"cafile {folder / 'ca.crt'}\ncertfile {folder / 'server.crt'}\n"
            f"keyfile {folder / 'server.key'}\n"
            f"allow_anonymous false\npassword_file {passwords}\n"
        ),
    )
    server.ca_file = folder / "ca.crt"  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


def _credentials(folder: Path, password: str) -> dict[str, str]:
    """A systemd credentials folder holding the MQTT password, as the unit's LoadCredential=
    makes it; the environment the daemon gets."""
    folder.mkdir()
    (folder / "mqtt_password").write_text(password + "\n")
    return {"CREDENTIALS_DIRECTORY": str(folder)}


def _tls_settings(broker, folder: Path, cameras: list[dict], ca_file: Path) -> dict:
    return daemon_settings(
        cameras,
        broker.port,
        folder,
        mqtt={
            "username": USER,
            "password": "${credential:mqtt_password}",
            "tls": {"ca_file": str(ca_file)},
        },
        logging={"level": "DEBUG"},
    )


def _refused_without_password(port: int, ca_file: Path) -> bool:
    outcome: list[object] = []
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.tls_set(ca_certs=str(ca_file))
    client.on_connect = lambda c, u, f, reason, p: outcome.append(reason)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_for(lambda: outcome, 10, "the broker's answer to an anonymous client")
    finally:
        client.loop_stop()
        client.disconnect()
    return bool(getattr(outcome[0], "is_failure", False))


def _assert_no_secret(text: str, where: str) -> None:
    for secret in (MQTT_SECRET, CAMERA_SECRET):
        assert secret not in text, f"{where} shows a secret:\n{text[-3000:]}"


def test_tls_and_password_end_to_end_with_nothing_secret_logged(
    tmp_path, tls_broker, test_model
) -> None:
    assert _refused_without_password(tls_broker.port, tls_broker.ca_file)
    rtsp = RtspServer(tmp_path, {"cam1": CLIP})
    rtsp.start()
    gallery = tmp_path / "state" / "gallery.sqlite"
    enroll(test_model, gallery, "lin-manuel-miranda")
    with_user = rtsp.url("cam1").replace("rtsp://", f"rtsp://viewer:{CAMERA_SECRET}@")
    cameras = [
        {"name": "door", "url": with_user, "fps": 5},
        {"name": "gate", "url": f"rtsp://viewer:{CAMERA_SECRET}@127.0.0.1:9/none", "fps": 5},
    ]
    settings = _tls_settings(tls_broker, tmp_path, cameras, tls_broker.ca_file)
    settings["recognition"] = {"model": str(test_model), "gallery": str(gallery)}
    settings["mqtt"]["spool_dir"] = str(tmp_path / "state" / "spool")
    env = _credentials(tmp_path / "credentials", MQTT_SECRET)
    subscriber = Subscriber(
        tls_broker.port, "facewatch/test/#", username=USER, password=MQTT_SECRET,
        ca_file=str(tls_broker.ca_file),
    )  # fmt: skip
    daemon = Daemon(tmp_path, settings, env=env)
    daemon.start()
    try:
        wait_for(lambda: subscriber.last("facewatch/test/status") == b"online", 60, "online")
        wait_for(lambda: subscriber.events(), 90, "events over TLS")
        wait_for(lambda: "camera gate: cannot open" in daemon.log(), 30, "the dead camera's log")
        assert daemon.metric("facewatch_mqtt_connected") == 1
        # why the camera is down reaches /metrics and `facewatch status`, the secret not
        down = [k for k in daemon.metrics() if k.startswith("facewatch_camera_down_since")]
        assert len(down) == 1 and 'camera="gate"' in down[0], down
        assert 'reason="cannot open: nothing listens on 127.0.0.1:9 (' in down[0], down
        status = subprocess.run(
            [str(FACEWATCH), "status", "-c", str(daemon.config_path), "--interval", "0.1"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 1, status
        assert "problem: camera gate is down for " in status.stdout, status.stdout
        assert "cannot open: nothing listens on 127.0.0.1:9 (" in status.stdout
        _assert_no_secret(status.stdout + status.stderr, "facewatch status")
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics") as page:
            _assert_no_secret(page.read().decode(), "/metrics")
    finally:
        code = daemon.stop()
        rtsp.stop()
    try:  # the broker delivers the last messages after the daemon has gone
        wait_for(lambda: subscriber.last("facewatch/test/status") == b"offline", 10, "offline")
    finally:
        subscriber.close()
    assert code == 0, daemon.log()[-3000:]
    log = daemon.log()
    assert "MQTT: connected to 127.0.0.1" in log and "DEBUG" in log
    assert "rtsp://viewer:***@127.0.0.1:9/none" in log  # the URL is named, its password not
    _assert_no_secret(log, "the daemon's log")
    payloads = b"".join(payload for _, payload, _ in subscriber.messages)
    _assert_no_secret(payloads.decode(errors="replace"), "the MQTT messages")

    # the gallery and the spool: owner-only
    spool = tmp_path / "state" / "spool"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    for path in [gallery, *spool.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_wrong_password_and_untrusted_ca_are_named_without_the_secret(tmp_path, tls_broker) -> None:
    camera = [{"name": "door", "url": str(CLIP), "fps": 2}]
    other_ca_folder = tmp_path / "other-ca"
    other_ca_folder.mkdir()
    other_ca = certificate_authority(other_ca_folder, "other")
    daemons = []
    for name, ca_file, password in (
        ("wrong-password", tls_broker.ca_file, CAMERA_SECRET),
        ("untrusted-ca", other_ca, MQTT_SECRET),
    ):
        folder = tmp_path / name
        folder.mkdir()
        settings = _tls_settings(tls_broker, folder, camera, ca_file)
        settings["node_id"] = name
        daemon = Daemon(folder, settings, env=_credentials(folder / "credentials", password))
        daemon.start()
        daemons.append(daemon)
    try:
        wait_for(
            lambda: (
                "refused the connection as user " in daemons[0].log()
                and ": Not authorized; retrying, events are spooled" in daemons[0].log()
            ),
            60,
            "the broker's refusal in the log",
        )
        wait_for(
            lambda: "certificate verify failed" in daemons[1].log(), 60, "the TLS error in the log"
        )
        time.sleep(3)  # more retries: each outage is reported once
        for daemon in daemons:
            assert daemon.metric("facewatch_mqtt_connected") == 0
            wait_for(lambda d=daemon: d.metric("facewatch_mqtt_spool_events") > 0, 60, "spool")
    finally:
        for daemon in daemons:
            daemon.stop()
    for daemon in daemons:
        log = daemon.log()
        _assert_no_secret(log, "the daemon's log")
        warned = [line for line in log.splitlines() if " WARNING daemon.mqtt: MQTT: " in line]
        said = [line for line in warned if "refused the connection as" in line or "cannot" in line]
        assert len(said) == 1, log  # (each retry at DEBUG)


def test_a_broker_ca_without_key_usage_passes_as_it_did_with_paho(tls_broker, monkeypatch):
    """Python 3.13's ssl.create_default_context refuses a CA without a key usage
    (VERIFY_X509_STRICT), as `openssl req -x509` makes one (this broker's): a broker that
    paho's tls_set had connected to was refused ('CA cert does not include key usage
    extension') once the daemon made the context itself with create_default_context. It
    makes it as tls_set did, whatever the Python."""
    ca, port = str(tls_broker.ca_file), tls_broker.port
    strict = ssl.create_default_context(cafile=ca)
    strict.verify_flags |= ssl.VERIFY_X509_STRICT  # (as Python 3.13 makes it)
    with (
        pytest.raises(ssl.SSLCertVerificationError, match="key usage"),  # (this CA has none)
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
    ):
        strict.wrap_socket(sock, server_hostname="127.0.0.1").close()
    python_3_10 = ssl.create_default_context

    def python_3_13(*args: object, **kwargs: object) -> ssl.SSLContext:
        context = python_3_10(*args, **kwargs)  # type: ignore[arg-type]
        context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    monkeypatch.setattr(ssl, "create_default_context", python_3_13)
    tls = RenewableContext(TlsConfig(ca_file=ca))
    assert not tls.current.verify_flags & ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        tls.handshake(sock, "127.0.0.1")  # (an SSLError says why not)


def test_a_client_certificate_the_broker_refuses_is_named(tmp_path, caplog) -> None:
    """With TLS 1.3 the client's handshake ends before the broker checks its certificate:
    a client certificate it refuses (another CA's, an expired or revoked one) closed the
    connection without an MQTT answer, and the log blamed mqtt.port ('is it a websockets
    port...?'). It names the certificate, the broker's alert and the TLS files to check."""
    ours, other = tls_generation(tmp_path / "ours"), tls_generation(tmp_path / "other")
    broker = Mosquitto(
        tmp_path,
        extra_conf=(
            f"cafile {ours / 'ca.crt'}\ncertfile {ours / 'server.crt'}\n"
            f"keyfile {ours / 'server.key'}\nrequire_certificate true\nallow_anonymous true\n"
        ),
    )
    broker.start()
    tls = TlsConfig(
        ca_file=str(ours / "ca.crt"),
        cert_file=str(other / "client.crt"),  # signed by a CA the broker does not trust
        key_file=str(other / "client.key"),
    )
    spool = Spool(tmp_path / "spool", 10)
    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", port=broker.port, tls=tls), "n", spool)
    try:
        with caplog.at_level("WARNING", logger="daemon.mqtt"):
            publisher.start()
            wait_for(lambda: caplog.records, 20, "the failed connection said")
    finally:
        publisher.stop(timeout_s=2, drain_s=0)
        spool.close()
        broker.stop()
    said = caplog.records[0].getMessage()
    assert said.startswith(
        f"MQTT: cannot connect to 127.0.0.1:{broker.port}: the broker refused the client "
        f"certificate {other / 'client.crt'} after the TLS handshake: [SSL: "
    ), said
    assert (
        "ALERT_UNKNOWN_CA" in said
        and "(check mqtt.tls.cert_file and key_file: a certificate signed by a CA the broker"
        in said
    ), said


def _in_place(source: Path, target: Path, names: list[str]) -> None:
    """Each file written over the one of its name in ``target`` (as `cp` renews it)."""
    for name in names:
        (target / name).write_bytes((source / name).read_bytes())


def test_tls_files_renewed_in_place_are_used_without_a_restart(tmp_path) -> None:
    """The broker's CA and the client's certificate and key renewed in place (the same
    paths: certbot, step-ca, or a CA replaced): the daemon kept the files it loaded at its
    start, never connected again, and blamed mqtt.host and mqtt.port (a fresh handshake with
    the new files succeeded) until someone restarted it. It says the handshake's own error,
    loads the renewed files at its next attempt, connects and sends what it spooled."""
    old, new = tls_generation(tmp_path / "old"), tls_generation(tmp_path / "new")
    broker_files, client_files = tmp_path / "broker", tmp_path / "client"
    for folder, names in ((broker_files, ["ca.crt", "server.crt", "server.key"]),
                          (client_files, ["ca.crt", "client.crt", "client.key"])):  # fmt: skip
        folder.mkdir()
        _in_place(old, folder, names)
    conf = (
        f"cafile {broker_files / 'ca.crt'}\ncertfile {broker_files / 'server.crt'}\n"
        f"keyfile {broker_files / 'server.key'}\nrequire_certificate true\nallow_anonymous true\n"
    )
    broker = Mosquitto(tmp_path, extra_conf=conf)
    broker.start()
    camera = [{"name": "door", "url": str(CLIP), "fps": 2}]
    files = {key: str(client_files / name) for key, name in
             (("ca_file", "ca.crt"), ("cert_file", "client.crt"), ("key_file", "client.key"))}  # fmt: skip
    daemon = Daemon(tmp_path, daemon_settings(camera, broker.port, tmp_path, mqtt={"tls": files}))
    daemon.start()
    subscriber = None
    try:
        wait_for(lambda: "MQTT: connected to 127.0.0.1" in daemon.log(), 60, "the connection")
        broker.stop()  # the broker's files renewed: the daemon's no longer pass
        _in_place(new, broker_files, ["ca.crt", "server.crt", "server.key"])
        broker = Mosquitto(tmp_path, port=broker.port, extra_conf=conf)
        broker.start()
        wait_for(lambda: "certificate verify failed" in daemon.log(), 60, "the TLS error")
        wait_for(lambda: daemon.metric("facewatch_mqtt_spool_events") > 0, 60, "the spool")
        subscriber = Subscriber(
            broker.port, "facewatch/test/#", ca_file=str(new / "ca.crt"),
            cert_file=str(new / "client.crt"), key_file=str(new / "client.key"),
        )  # fmt: skip
        _in_place(new, client_files, ["ca.crt", "client.crt", "client.key"])  # renewed
        wait_for(lambda: daemon.metric("facewatch_mqtt_connected") == 1, 45, "a reconnection")
        wait_for(lambda: daemon.metric("facewatch_mqtt_spool_events") == 0, 30, "the spool sent")
        wait_for(lambda: subscriber.events(), 10, "the spooled events")
    finally:
        code = daemon.stop()
        broker.stop()
        if subscriber is not None:
            subscriber.close()
    assert code == 0, daemon.log()[-3000:]
    log = daemon.log()
    assert (
        "MQTT: cannot connect to 127.0.0.1:" in log
        and "certificate verify failed" in log
        and "(check mqtt.tls.ca_file: the CA that signed the broker's certificate" in log
    ), log[-3000:]
    assert "after the TLS handshake" not in log, log[-3000:]
    assert (
        "MQTT: mqtt.tls.ca_file, mqtt.tls.cert_file, mqtt.tls.key_file changed since loaded: "
        "the next connection uses the renewed files" in log
    ), log[-3000:]
    assert log.count("MQTT: connected to 127.0.0.1") == 2, log[-3000:]


def test_tls_files_caught_half_renewed_are_said_and_tried_again(tmp_path, caplog) -> None:
    """A client certificate renewed before its key (two copies, one after the other): the
    publisher says why the files cannot be used yet, once, keeps the ones it loaded, and
    loads them at the next attempt once the key is there too."""
    old, new = tls_generation(tmp_path / "old"), tls_generation(tmp_path / "new")
    live = tmp_path / "live"
    live.mkdir()
    _in_place(old, live, ["ca.crt", "client.crt", "client.key"])
    tls = TlsConfig(
        ca_file=str(live / "ca.crt"),
        cert_file=str(live / "client.crt"),
        key_file=str(live / "client.key"),
    )
    spool = Spool(tmp_path / "spool", 10)
    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", port=8883, tls=tls), "node", spool)
    assert publisher.tls is not None
    loaded = publisher.tls.current
    with caplog.at_level("INFO", logger="daemon.mqtt"):
        assert not publisher.renew_tls()  # nothing changed
        _in_place(new, live, ["client.crt"])
        assert not publisher.renew_tls() and not publisher.renew_tls()
        assert publisher.tls.current is loaded
        _in_place(new, live, ["client.key"])
        assert publisher.renew_tls()
        assert publisher.tls.current is not loaded
        assert not publisher.renew_tls()
    spool.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("MQTT: mqtt.tls.cert_file changed since loaded, but ")
    assert "KEY_VALUES_MISMATCH" in lines[0] or "key values mismatch" in lines[0], lines
    assert lines[0].endswith(
        "the connection keeps using the TLS files as they were loaded before, and tries "
        "these again at each attempt"
    ), lines
    assert lines[1] == (
        "MQTT: mqtt.tls.cert_file, mqtt.tls.key_file changed since loaded: the next "
        "connection uses the renewed files"
    )


CLIENT_FILES = {"ca_file": "ca.crt", "cert_file": "client.crt", "key_file": "client.key"}


def _certbot(live: Path, generation: Path) -> None:
    """The client's files of ``generation`` in ``live`` as certbot renews them: each file a
    symlink, pointed at the new version of it."""
    live.mkdir(exist_ok=True)
    for name in CLIENT_FILES.values():
        link = live / name
        link.unlink(missing_ok=True)
        link.symlink_to(generation / name)


def _kubelet(secret: Path, generation: Path) -> None:
    """The client's files of ``generation`` in ``secret`` as kubelet updates a mounted
    secret (cert-manager's): the files in a new hidden folder, the ``..data`` symlink that
    the files link through swapped to it at once, the old folder deleted."""
    secret.mkdir(exist_ok=True)
    data = secret / "..data"
    old = data.resolve() if data.is_symlink() else None
    fresh = secret / f"..{generation.name}"
    fresh.mkdir()
    for name in CLIENT_FILES.values():
        shutil.copy(generation / name, fresh / name)
        if not (secret / name).is_symlink():
            (secret / name).symlink_to(f"..data/{name}")
    (secret / "..data_tmp").symlink_to(fresh.name)
    os.replace(secret / "..data_tmp", data)
    if old is not None:
        shutil.rmtree(old)


def test_tls_files_renewed_by_re_pointing_symlinks_are_loaded(tmp_path, caplog) -> None:
    """certbot renews live/cert.pem by pointing the link at the next file, cert-manager
    by swapping the ..data link its files go through (and deleting the old folder). The
    config named the links' targets at the start: the daemon watched those, never loaded a
    renewal (or said at every attempt that the deleted one could not be used), and
    certbot's deploy hook `systemctl reload facewatch` was told mqtt.tls.* had changed and
    needed a restart. Each renewal is loaded, and the config reads as unchanged."""
    generations = [tls_generation(tmp_path / f"gen{n}") for n in (1, 2, 3)]
    loaded = []
    with caplog.at_level("INFO", logger="daemon.mqtt"):
        for renew in (_certbot, _kubelet):
            folder = tmp_path / renew.__name__.strip("_")
            renew(folder, generations[0])
            path = tmp_path / f"{folder.name}.yaml"
            files = {key: f"{folder.name}/{name}" for key, name in CLIENT_FILES.items()}
            path.write_text(yaml.safe_dump({"cameras": [{"name": "door", "url": "rtsp://h/1"}],
                                            "mqtt": {"tls": files}}))  # fmt: skip
            config = load_config(path)
            spool = Spool(tmp_path / f"spool-{folder.name}", 10)
            publisher = MqttPublisher(config.mqtt, "node", spool)
            assert publisher.tls is not None
            for generation in generations[1:]:
                before = publisher.tls.current
                renew(folder, generation)
                loaded.append(publisher.renew_tls() and publisher.tls.current is not before)
                assert config_changes(config, load_config(path)) == [], renew.__name__
            spool.close()
    assert loaded == [True] * 4
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("INFO", "MQTT: mqtt.tls.ca_file, mqtt.tls.cert_file, mqtt.tls.key_file changed since "
                 "loaded: the next connection uses the renewed files")
    ] * 4, lines  # fmt: skip


ADMIN, ADMIN_SECRET = "admin", "admin-Secret-2b9d"
DISCOVERY = "homeassistant/binary_sensor/facewatch_test/status/config"
EVENTS = "facewatch/test/events/door"


def _acl_broker(folder: Path, user_topics: list[str]) -> tuple[Mosquitto, Path]:
    """mosquitto with a password file and an ACL that lets USER write ``user_topics`` only
    (and ADMIN read everything); the ACL file, to change and reload (SIGHUP)."""
    passwords, acl = folder / "passwords", folder / "acl"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), USER, MQTT_SECRET], check=True, timeout=60
    )
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwords), ADMIN, ADMIN_SECRET], check=True, timeout=60
    )
    _write_acl(acl, user_topics)
    server = Mosquitto(
        folder,
        extra_conf=f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n",
    )
    server.start()
    return server, acl


def _write_acl(acl: Path, user_topics: list[str]) -> None:
    lines = [f"user {ADMIN}", "topic readwrite #", f"user {USER}"]
    acl.write_text("\n".join(lines + [f"topic readwrite {t}" for t in user_topics]) + "\n")


def test_messages_the_brokers_acl_refuses_are_named_and_kept_until_it_lets_them_through(
    tmp_path, caplog, monkeypatch
) -> None:
    """A broker whose ACL lets the daemon's user write its cameras' topics only: the log names
    the refused events topic, the node's status and the discovery config with the ACL line
    each needs, the events stay in the spool (an MQTT 3.1.1 broker acknowledges a refused
    message, and the publisher deleted them: lost), and once the ACL lets them through they
    are all delivered (with mqtt.protocol 5). A refused face snapshot is dropped: it held
    every event behind it."""
    monkeypatch.setattr(mqtt_delivery, "REFUSED_RETRY_S", 0.5)
    caplog.set_level(logging.INFO, logger="daemon.mqtt")
    broker, acl = _acl_broker(tmp_path, ["facewatch/test/cameras/#"])
    spool = Spool(tmp_path / "spool", 100)
    spool.append("facewatch/test/snapshots/door/e0", b"\xff\xd8 a face")  # refused: dropped
    for n in range(3):
        spool.append(EVENTS, json.dumps({"n": n}).encode(), kind="event")
    config = MqttConfig(port=broker.port, username=USER, password=MQTT_SECRET, protocol="5")
    publisher = MqttPublisher(config, "test", spool)
    publisher.announce([(DISCOVERY, b"{}")], birth_topic="homeassistant/status")
    subscriber = Subscriber(broker.port, "#", username=ADMIN, password=ADMIN_SECRET)
    publisher.start()
    try:
        wait_for(lambda: "refused facewatch/test/events/door" in caplog.text, 20, "the refusal")
        wait_for(lambda: "discovery config" in caplog.text, 10, "the discovery config's")
        log = caplog.text
        assert "the broker refused this node's status facewatch/test/status (Not authorized)" in log
        assert f"the broker's ACL must let user {USER} write facewatch/test/#" in log
        assert "must let user facewatch write homeassistant/+/facewatch_test/#" in log
        assert "refused facewatch/test/snapshots/door/e0 (Not authorized)" in log
        assert "face snapshots are dropped while it refuses them, events go on" in log
        assert "it stays in the spool with the 3 message(s) there" in log
        refusals = metrics.MQTT_PUBLISHES.labels("refused")._value.get()
        time.sleep(1.5)  # offered again meanwhile, still refused: logged once
        offered = metrics.MQTT_PUBLISHES.labels("refused")._value.get() - refusals
        assert 1 <= offered <= 4, f"offered {offered} times in 1.5 s: every 0.5 s, not in a loop"
        assert caplog.text.count("refused facewatch/test/events/door") == 1
        assert len(spool) == 3, "the refused events are kept"
        assert metrics.MQTT_REFUSED._value.get() == 1
        assert subscriber.events() == []

        _write_acl(acl, ["facewatch/test/#", "homeassistant/#"])  # the ACL fixed, reloaded
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(subscriber.events()) == 3, 20, "the kept events")
        assert [e["n"] for e in subscriber.events()] == [0, 1, 2]
        assert "the broker takes facewatch/test/events/door: sending the spool" in caplog.text
        assert metrics.MQTT_REFUSED._value.get() == 0
    finally:
        publisher.stop(timeout_s=2, drain_s=0)
        subscriber.close()
        spool.close()
        broker.stop()


def test_messages_spooled_for_another_node_that_the_acl_refuses_do_not_hold_this_nodes(
    tmp_path, caplog, monkeypatch
) -> None:
    """A spool restored from box A on box B (or node_id renamed while events waited), MQTT 5
    and the broker's ACL written for node boxb: A's events, refused, held every one of B's
    behind them for good, and the log called them Home Assistant's discovery config with an
    ACL line for +/boxa/#. The start says what the spool holds for another node (how many,
    when, how to delete them); the refused ones are dropped, one line per topic, and B's
    events go on."""
    monkeypatch.setattr(mqtt_delivery, "REFUSED_RETRY_S", 0.5)
    caplog.set_level(logging.INFO, logger="daemon.mqtt")
    broker, _ = _acl_broker(tmp_path, ["facewatch/boxb/#", "homeassistant/+/facewatch_boxb/#"])
    spool = Spool(tmp_path / "spool", 100)
    old = "facewatch/boxa/events/door"
    for n, ts in enumerate((1_764_600_000.0, 1_764_600_100.0, 1_764_603_600.0)):
        spool.append(old, json.dumps({"n": n, "frame_ts": ts}).encode(), kind="event")
        spool.append(f"facewatch/boxa/snapshots/door/e{n}", b"\xff\xd8 a face")
    for n in range(2):
        spool.append("facewatch/boxb/events/door", json.dumps({"n": n}).encode(), kind="event")
    config = MqttConfig(port=broker.port, username=USER, password=MQTT_SECRET, protocol="5")
    publisher = MqttPublisher(config, "boxb", spool)
    subscriber = Subscriber(broker.port, "#", username=ADMIN, password=ADMIN_SECRET)
    publisher.start()
    try:
        wait_for(lambda: len(subscriber.events()) == 2, 20, "this node's events")
        assert [e["n"] for e in subscriber.events()] == [0, 1]
        wait_for(lambda: len(spool) == 0, 5, "the spool emptied")
    finally:
        publisher.stop(timeout_s=2, drain_s=0)
        subscriber.close()
        spool.close()
        broker.stop()
    log = caplog.text
    first, last = (
        time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) for t in (1_764_600_000, 1_764_603_600)
    )
    assert (
        f"MQTT spool {spool.path}: 6 message(s) (events of {first} to {last}) spooled for "
        "facewatch/boxa, not for this node (facewatch/boxb): node_id or mqtt.topic_prefix "
        "changed since"
    ) in log, log
    deleted = "DELETE FROM messages WHERE substr(topic, 1, 15) != 'facewatch/boxb/'"
    assert f"sqlite3 {spool.path} {shlex.quote(deleted)}" in log
    assert (
        f"the broker refused {old} (Not authorized), spooled for facewatch/boxa, not for this "
        "node (facewatch/boxb: node_id or mqtt.topic_prefix changed since"
    ) in log
    assert (
        f"only with a line for facewatch/boxa/#; dropped, with every message spooled for {old}: 3 in all"
        in log
    )
    assert log.count("dropped, with every message spooled for") == 2, (
        "the events', a camera's snapshots'"
    )
    assert "discovery config" not in log and "stays in the spool" not in log
    assert metrics.MQTT_REFUSED._value.get() == 0


@pytest.mark.parametrize("command", ["validate-config", "run"])
def test_config_errors_do_not_echo_secrets(tmp_path, capsys, command) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "cameras:\n"
        f"  - {{name: door, url: 'rtsp://viewer:{CAMERA_SECRET}@10.0.0.5/s', fps: 0}}\n"
        f"  - {{name: gate, url: {{bad: 'rtsp://u:{CAMERA_SECRET}@h/'}}}}\n"
        "mqtt:\n"
        f"  password: ['{MQTT_SECRET}']\n"
    )
    assert main([command, str(config)] if command == "validate-config" else
                [command, "--config", str(config)]) == 2  # fmt: skip
    out = capsys.readouterr()
    assert "cameras[0] (door).fps" in out.err and "mqtt.password" in out.err, out.err
    _assert_no_secret(out.out + out.err, f"facewatch {command}")
