"""The daemon's configuration: defaults, bounds, key paths in errors, secrets."""

from __future__ import annotations

import contextlib
import json
import os
import re
import types

import numpy as np
import pytest

from daemon.config import DEFAULT_CONFIG, WARM_UP_HW, ConfigError, plan_request
from daemon.config_cameras import CameraConfig
from daemon.config_changes import config_changes
from daemon.config_file import load_config, parse_config
from daemon.config_listing import schema_lines
from daemon.redaction import redact_url
from tests.conftest import MODELS, REPO

CAMERA = {"name": "door", "url": "rtsp://cam/stream"}


def test_defaults_fill_everything_but_the_cameras() -> None:
    config = parse_config({"cameras": [CAMERA]})
    assert config.batching.max_batch == 2 and config.mqtt.port == 1883
    assert config.metrics.address == "127.0.0.1", "metrics stay on loopback unless asked"
    assert config.cameras[0].fps == 5.0 and config.cameras[0].enabled


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cameras": [CAMERA], "mqtt": {"prot": 1}}, "mqtt.prot: unknown key"),
        (
            {"cameras": [CAMERA], "tracking": {"min_votes": 20}},
            "tracking.min_votes: 20 votes can never be reached in a window of vote_window: 15",
        ),
        ({"cameras": [CAMERA, {"name": "yard", "url": "x", "fps": -1}]}, "cameras[1] (yard).fps"),
        ({"cameras": [CAMERA, CAMERA]}, "repeated: door"),
        (
            {"cameras": [CAMERA, {"name": "Door", "url": "x"}]},
            "cameras: cameras[0] (door) and cameras[1] (Door): names that differ only in case",
        ),
        (
            {"cameras": [{"name": "front_door", "url": "x"}, {"name": "front-door", "url": "y"}]},
            "cameras[0] (front_door) and cameras[1] (front-door): names that differ only in case "
            "or in '-' against '_' are one name to Home Assistant "
            "(binary_sensor.front_door_face for each)",
        ),
        ({"cameras": [{"name": "--help", "url": "x"}]}, "not starting with '-'"),
        ({"cameras": [{"name": "_-", "url": "x"}]}, "with a letter or digit"),
        (
            {"cameras": [CAMERA], "node_id": "_"},
            "node_id: letters, digits, '_' and '-' only, not starting",
        ),
        (
            {"cameras": [{"name": "bad name!", "url": "x"}]},
            "cameras[0] (bad name!).name: letters, digits",
        ),
        (
            {"cameras": [CAMERA], "detection": {"thresholds": [0.6, 0.7, 1.5]}},
            "detection.thresholds",
        ),
        ({"cameras": [CAMERA], "batching": {"max_batch": "eight"}}, "batching.max_batch"),
        (
            {
                "cameras": [CAMERA],
                "recognition": {"precision": "bf16"},
                "engines": {"backend": "torch"},
            },
            "engines: backend torch runs FaceNet on the GPU: recognition.precision "
            "bf16 is for the CPU backends",
        ),
        ({"cameras": [CAMERA], "recognition": {"precision": "fp16"}}, "recognition.precision"),
        (
            {"cameras": [CAMERA], "engines": {"fp16": True}},
            "engines: fp16 is a setting of the torch backend, not openvino",
        ),
        (
            {"cameras": [CAMERA], "engines": {"backend": "torch", "torch_device": "gpu0"}},
            "engines.torch_device: String should match pattern",
        ),
        (
            {"cameras": [CAMERA], "engines": {"tensorrt": {"precision": "fp32"}}},
            "engines: tensorrt holds settings of the tensorrt backend, not openvino",
        ),
        (
            {
                "cameras": [CAMERA],
                "engines": {"backend": "tensorrt", "tensorrt": {"precision": "int8"}},
            },
            "tensorrt.precision int8 needs tensorrt.calib_dir",
        ),
        (
            {
                "cameras": [CAMERA],
                "engines": {"backend": "tensorrt", "tensorrt": {"calib_dir": "calib"}},
            },
            "tensorrt.calib_dir is for int8 only, not fp16",
        ),
        (
            {
                "cameras": [CAMERA],
                "engines": {"backend": "tensorrt", "tensorrt": {"camera_sizes": ["1920*1080"]}},
            },
            "engines.tensorrt.camera_sizes: expected WIDTHxHEIGHT of at least 12x12",
        ),
        ({"cameras": [{"url": "x"}]}, "cameras[0].name: required key is missing"),
        (
            {"cameras": [{**CAMERA, "rotate": 45}]},
            "cameras[0] (door).rotate: Input should be 0, 90, 180 or 270 (got 45)",
        ),
        (
            {"cameras": [CAMERA], "recognition": {"min_face_px": -1}},
            "recognition.min_face_px: Input should be greater than or equal to 0",
        ),
        (
            {"cameras": [{**CAMERA, "recognition": {"min_face_px": "big"}}]},
            "recognition.min_face_px",
        ),
        (
            {"cameras": [{**CAMERA, "recognition": {"threshold": 0}}]},
            "cameras[0] (door).recognition.threshold: Input should be greater than 0",
        ),
        (
            {"cameras": [{**CAMERA, "recognition": {"threshold": 5}}]},
            "cameras[0] (door).recognition.threshold: Input should be less than or equal to 4",
        ),
        ([1, 2], "expected a mapping"),
    ],
)
def test_errors_name_the_key_path(raw, message) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, "cam.yaml")
    assert "cam.yaml" in str(error.value) and message in str(error.value)


def test_environment_and_systemd_credentials(tmp_path, monkeypatch) -> None:
    (tmp_path / "mqtt_password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("BROKER", "broker.lan")
    raw = {
        "cameras": [CAMERA],
        "mqtt": {"host": "${BROKER}", "password": "${credential:mqtt_password}"},
    }
    config = parse_config(raw)
    assert (config.mqtt.host, config.mqtt.password) == ("broker.lan", "s3cret")
    monkeypatch.setenv("ROTATE", "90")  # a number from the environment, as fps takes one
    monkeypatch.setenv("FPS", "2.5")
    turned = {**CAMERA, "rotate": "${ROTATE}", "fps": "${FPS}"}
    assert parse_config({"cameras": [turned]}).cameras[0].rotate == 90
    (tmp_path / "camera_password").write_text("")
    camera = {"name": "door", "url": "rtsp://viewer:${credential:camera_password}@cam/1"}
    with pytest.raises(ConfigError, match=r"cameras\[0\] \(door\)\.url: credential .camera_"):
        parse_config({"cameras": [camera]})
    (tmp_path / "mqtt_password").write_text("\n")  # `read -rs PW` gone wrong
    with pytest.raises(
        ConfigError, match=r"mqtt.password: credential .mqtt_password.: .* is empty"
    ):
        parse_config(raw)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(
        ConfigError, match=r"mqtt.password: credential .mqtt_password.*LoadCredential"
    ) as error:
        parse_config(raw)
    # compose's and Docker's secrets: the same files, in /run/secrets
    assert "or CREDENTIALS_DIRECTORY=/run/secrets for a container's secrets" in str(error.value)


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://[::1/x",
        "rtsp://cam.lan:99999/x",
        "rtsp://u:pw@cam.lan:port/x",
        "rtsp://u:pw/x@cam.lan/door",  # a / in the password, not encoded
        "rtsp://u:pw#1@cam.lan/door",  # a #
    ],
)
def test_a_camera_url_that_cannot_be_read_is_refused(url) -> None:
    with pytest.raises(ConfigError, match=r"\(door\)\.url: .* percent-encoded") as error:
        parse_config({"cameras": [{"name": "door", "url": url}]})
    assert "pw" not in str(error.value).replace("password", "")


BRACKETS = "an IPv6 address is written in brackets, the port after them: rtsp://[fd00::10]:554/"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("[fd00::5]:554/stream", "no scheme: did you mean rtsp://[fd00::5]:554/stream ?"),
        ("fd00::5:554/stream", "no scheme, and " + BRACKETS),
        ("rtsp://fd00::5:554/stream", BRACKETS),
        ("rtsp://viewer:pw@fd00::5/1", BRACKETS),
    ],
)
def test_a_camera_at_an_ipv6_address_is_told_how_to_write_it(url, expected) -> None:
    """Without brackets an IPv6 camera URL said 'cannot be read as a URL (no port number
    after the host's ':'): a password holding / ? # must be written percent-encoded';
    bracketed without a scheme, it was taken for a file ('no such file')."""
    with pytest.raises(ConfigError, match=re.escape(f"(door).url: {expected}")) as error:
        parse_config({"cameras": [{"name": "door", "url": url}]})
    assert "pw" not in str(error.value)


@pytest.mark.parametrize("url", ["rtsp://192.168.1.5:554:554/1", "rtsp://cam::554/1"])
def test_a_port_written_twice_is_not_taken_for_an_ipv6_address(url) -> None:
    """A host or an IPv4 address with a ':' too many is no IPv6 address: no brackets said."""
    with pytest.raises(ConfigError, match="no port number after the host's ':'") as error:
        parse_config({"cameras": [{"name": "door", "url": url}]})
    assert "IPv6" not in str(error.value)


@pytest.mark.parametrize("url", ["htp://10.0.0.2/cam", "rstp://u:pw@cam.lan/1", "ftp://x/y"])
def test_a_camera_url_with_an_unknown_scheme_is_refused(url) -> None:
    with pytest.raises(ConfigError, match=r"cameras\[0\] \(door\)\.url: unknown scheme") as error:
        parse_config({"cameras": [{"name": "door", "url": url}]})
    assert "pw@" not in str(error.value)


@pytest.mark.parametrize(
    "url", ["RTSP://cam.lan/1", "rtsps://[fe80::1]:8554/1", "/dev/video0", "a.mp4", "file:///a.mp4"]
)
def test_streams_devices_and_files_are_camera_urls(url) -> None:
    assert parse_config({"cameras": [{"name": "door", "url": url}]}).cameras[0].url == url


def test_commands_that_use_no_camera_or_broker_leave_secrets_unresolved(monkeypatch) -> None:
    """`engines build --config` reads the daemon's file without its secrets at hand."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("CAMERA_PASSWORD", raising=False)
    raw = {
        "cameras": [{"name": "door", "url": "rtsp://viewer:${CAMERA_PASSWORD}@cam/1"}],
        "mqtt": {"password": "${credential:mqtt_password}"},
    }
    with pytest.raises(ConfigError, match="environment variable CAMERA_PASSWORD is not set"):
        parse_config(raw)
    config = parse_config(raw, secrets=False)
    assert config.cameras[0].url == "rtsp://viewer:${CAMERA_PASSWORD}@cam/1"
    assert config.mqtt.password == "${credential:mqtt_password}"
    raw["mqtt"]["password"] = "${credential:}"  # no reference at all: an error either way
    with pytest.raises(ConfigError, match=r"mqtt\.password: \$\{credential:\} is no reference"):
        parse_config(raw, secrets=False)


def test_paths_are_relative_to_the_config_file(tmp_path) -> None:
    path = tmp_path / "sub" / "f.yaml"
    path.parent.mkdir()
    path.write_text("cameras: [{name: a, url: clip.mp4}, {name: b, url: 'rtsp://h/s'}]\n")
    config = load_config(path)
    assert config.cameras[0].url == str(path.parent / "clip.mp4")
    assert config.cameras[1].url == "rtsp://h/s"
    assert config.mqtt.spool_dir == str(path.parent / "spool")


def test_tls_files_are_relative_to_the_config_file_wherever_it_is_read_from(
    tmp_path, monkeypatch
) -> None:
    """`ca_file: ca.crt` beside /etc/facewatch/facewatch.yaml passed a validate-config run
    in /etc/facewatch, and the service (working in /var/lib/facewatch) stopped at its start:
    'mqtt.tls.ca_file: ca.crt: not found'."""
    path = tmp_path / "etc" / "f.yaml"
    path.parent.mkdir()
    path.write_text(
        "cameras: [{name: a, url: 'rtsp://h/s'}]\n"
        "mqtt: {tls: {ca_file: ca.crt, cert_file: tls/client.crt, key_file: /keys/client.key}}\n"
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    tls = load_config(path).mqtt.tls
    assert tls is not None
    assert tls.ca_file == str(path.parent / "ca.crt")
    assert tls.cert_file == str(path.parent / "tls" / "client.crt")
    assert tls.key_file == "/keys/client.key"
    path.write_text("cameras: [{name: a, url: 'rtsp://h/s'}]\nmqtt: {tls: {insecure: true}}\n")
    tls = load_config(path).mqtt.tls
    assert tls is not None and tls.ca_file is None  # the system's CAs


def test_tls_files_given_through_symlinks_are_read_through_them(tmp_path) -> None:
    """certbot's live/cert.pem links to archive/cert1.pem, and a renewal points it at
    cert2.pem: the config named the target it had at the start, so the daemon kept reading
    cert1.pem (renewals never loaded), and each reload said mqtt.tls.* had changed."""
    (tmp_path / "archive").mkdir()
    (tmp_path / "live").mkdir()
    for n in (1, 2):
        (tmp_path / "archive" / f"cert{n}.pem").write_text(f"certificate {n}\n")
    link = tmp_path / "live" / "cert.pem"
    link.symlink_to("../archive/cert1.pem")
    path = tmp_path / "f.yaml"
    path.write_text(
        "cameras: [{name: a, url: 'rtsp://h/s'}]\n"
        f"mqtt: {{tls: {{ca_file: live/cert.pem, cert_file: {link}}}}}\n"
    )
    before = load_config(path)
    assert before.mqtt.tls is not None
    assert before.mqtt.tls.ca_file == before.mqtt.tls.cert_file == str(link)
    link.unlink()
    link.symlink_to("../archive/cert2.pem")  # renewed
    assert config_changes(before, load_config(path)) == []


def test_the_tensorrt_plans_follow_the_config(tmp_path, monkeypatch) -> None:
    """What the daemon asks of TensorRT: the camera sizes (and the warm-up frame's), the
    smallest face size of any enabled camera, max_batch frames a call, the precision."""
    monkeypatch.setenv("FACEWATCH_ENGINE_CACHE", str(tmp_path / "plans"))
    path = tmp_path / "facewatch.yaml"
    path.write_text(
        "cameras:\n"
        "  - {name: door, url: rtsp://h/1, detection: {min_face_size: 40}}\n"
        "  - {name: yard, url: rtsp://h/2, detection: {min_face_size: 16}}\n"
        "  - {name: gate, url: rtsp://h/3, enabled: false, detection: {min_face_size: 12}}\n"
        "batching: {max_batch: 12}\n"
        "engines:\n"
        "  backend: tensorrt\n"
        "  tensorrt: {precision: int8, calib_dir: calib, camera_sizes: [2560x1440, 640x360]}\n"
    )
    request = plan_request(load_config(path), path)
    assert request.camera_hw == ((1440, 2560), (360, 640), WARM_UP_HW)
    assert request.min_face_size == 16 and request.frames_per_call == 12
    assert (request.precision, request.calib_dir) == ("int8", str(tmp_path / "calib"))
    assert request.cache_dir == str(tmp_path / "plans") and request.build
    assert request.build_command == f"facewatch engines build --config {path}"
    default = plan_request(parse_config({"cameras": [CAMERA], "engines": {"backend": "tensorrt"}}))
    assert default.precision == "fp16" and default.camera_hw == ((1080, 1920), WARM_UP_HW)


def test_the_demo_config_is_valid_and_every_setting_is_described() -> None:
    config = load_config(DEFAULT_CONFIG)
    assert config.cameras[0].url.endswith("hamilton_360p.mp4")
    lines = schema_lines()
    assert any(line.startswith("cameras[].fps (default 5.0; > 0, <= 60): ") for line in lines)
    # defaults as YAML spells them, so a line can be pasted into the file
    assert any(line.startswith("recognition.threshold (default null; > 0, <= 4): ") for line in lines)  # fmt: skip
    assert any(line.startswith("detection.thresholds (default [0.6, 0.7, 0.7]): ") for line in lines)  # fmt: skip
    assert any("(default openvino; one of openvino, opencv, onnxruntime, tensorrt, torch)" in line for line in lines)  # fmt: skip
    assert all(line.split(": ", 1)[1].strip() for line in lines)


def test_the_rtsp_example_is_valid_with_its_secrets(tmp_path, monkeypatch) -> None:
    (tmp_path / "mqtt_password").write_text("pw")
    (tmp_path / "camera_password").write_text("cam-pw\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(DEFAULT_CONFIG.with_name("rtsp-example.yaml"))
    assert config.cameras[0].url.startswith("rtsp://viewer:cam-pw@")
    assert config.cameras[1].detection.min_face_size == 40
    assert config.mqtt.password == "pw" and config.mqtt.tls is not None
    assert config.mqtt.home_assistant.enabled
    assert config.tracking.snapshots, "Home Assistant's image entities, a notification's picture"


def test_the_jetson_example_is_valid_and_asks_for_plans_of_its_cameras(
    tmp_path, monkeypatch
) -> None:
    for name in ("mqtt_password", "camera_password"):
        (tmp_path / name).write_text("pw")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(DEFAULT_CONFIG.with_name("jetson-example.yaml"))
    assert config.engines.backend == "tensorrt" and len(config.cameras) == 3
    assert config.mqtt.home_assistant.enabled
    request = plan_request(config, "/etc/facewatch/facewatch.yaml")
    assert request.precision == "fp16" and request.frames_per_call == 4
    assert {(1080, 1920), (720, 1280)} <= set(request.camera_hw)
    assert request.workspace_bytes == 512 << 20 and request.build
    assert request.build_command == "facewatch engines build --config /etc/facewatch/facewatch.yaml"


def test_a_badly_typed_password_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"cameras": [CAMERA], "mqtt": {"password": ["hunter2"]}})
    with pytest.raises(ConfigError) as error:
        parse_config({"cameras": [CAMERA], "mqtt": {"password": 123456789}})
    assert "mqtt.password" in str(error.value) and "123456789" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("rtsp://viewer:s3cr:et@10.0.0.5:554/s1", "rtsp://viewer:***@10.0.0.5:554/s1"),
        (
            "cannot open rtsp://u:p@h/x and http://a:b@c/",
            "cannot open rtsp://u:***@h/x and http://a:***@c/",
        ),
        ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
        ("rtsp://admin:p@ss@cam/x", "rtsp://admin:***@cam/x"),  # an @ in the password
        ("rtsp://a:b@h:554/p@x", "rtsp://a:***@x"),  # an @ in the path: masked to it
        ("rtsp://admin:Wr0ng/Pass@10.0.0.5/door", "rtsp://admin:***@10.0.0.5/door"),
        (
            "http://cam/flv?user=admin&password=Wr0ng&x=1",
            "http://cam/flv?user=admin&password=***&x=1",
        ),
        ("rtsp://cam/door?usr=admin&PWD=Wr0ng", "rtsp://cam/door?usr=admin&PWD=***"),
        ("rtsp://token@10.0.0.5/stream", "rtsp://token@10.0.0.5/stream"),
        (
            "http://cam/v.cgi?loginuse=admin&loginpas=s3cr",
            "http://cam/v.cgi?loginuse=admin&loginpas=***",
        ),
        ("http://cam/snap?psw=s3cr&passcode=1234", "http://cam/snap?psw=***&passcode=***"),
        ("/dev/video0", "/dev/video0"),
    ],
)
def test_redact_url_masks_passwords_only(text: str, shown: str) -> None:
    assert redact_url(text) == shown


def test_the_configs_own_passwords_are_masked_whatever_they_hold(tmp_path, monkeypatch) -> None:
    """A password with a quote or a space cannot be told apart from the text after it by a
    pattern: the config's passwords (in camera URLs, the broker's, credentials) are known and
    masked wherever they show, also in the error that the config itself gives."""
    quoted, spaced, credential = "Sup3r'Secret", "pa ss-w0rd", "from-a-f1le"
    (tmp_path / "cam").write_text(credential + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        parse_config(
            {
                "cameras": [
                    {"name": "door", "url": f"rtsp://admin:{quoted}@cam.lan:55x4/s1"},
                    {"name": "gate", "url": "rtsp://u:${credential:cam}@gate.lan/s1"},
                    {"name": "yard", "url": "rtsp://u:at-path-pw@yard.lan/live@main"},
                ],
                "mqtt": {"password": spaced},
            }
        )
    assert "(got 'rtsp://admin:***@cam.lan:55x4/s1')" in str(error.value), error.value
    for secret in (quoted, spaced, credential, "at-path-pw"):  # (an @ in the path, too)
        assert redact_url(f"cannot open: rtsp://u:{secret}@h/x (said [{secret}])") == (
            "cannot open: rtsp://u:***@h/x (said [***])"
        )
    assert redact_url("the cat sat") == "the cat sat"  # what is no password stays


def test_yaml_anchors_and_merge_keys_load_and_a_repeated_key_is_refused(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "defaults: &cam {url: rtsp://h/1, fps: 4}\n"  # an anchor is an unknown key: refused
    )
    with pytest.raises(ConfigError, match="defaults"):
        load_config(path)
    path.write_text(
        "cameras:\n  - &door {name: door, url: rtsp://h/1, fps: 4}\n  - <<: *door\n    name: gate\n"
    )
    config = load_config(path)
    assert [(c.name, c.fps) for c in config.cameras] == [("door", 4.0), ("gate", 4.0)]
    path.write_text("cameras: [{name: a, url: rtsp://h/1}]\nmqtt: {port: 1}\nmqtt: {port: 2}\n")
    with pytest.raises(ConfigError, match=r"(?s)c\.yaml.*'mqtt' is given twice.*line 3"):
        load_config(path)


def test_a_config_that_is_not_utf8_is_named(tmp_path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("node_id: café\ncameras: [{name: a, url: rtsp://h/1}]\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load_config(path)


def test_every_missing_secret_is_named_at_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # holds neither
    with pytest.raises(ConfigError) as error:
        load_config(DEFAULT_CONFIG.with_name("rtsp-example.yaml"))
    assert "credential 'camera_password'" in str(error.value)
    assert "credential 'mqtt_password'" in str(error.value)


def test_validate_config_wants_the_file_it_checks(capsys, monkeypatch, tmp_path) -> None:
    """Without a file it would say "valid" of the demo's, which nobody meant to check."""
    from daemon import config
    from daemon.cli import main

    monkeypatch.delenv("FACEWATCH_CONFIG", raising=False)
    monkeypatch.setattr(config, "SERVICE_CONFIG", tmp_path / "none.yaml")
    assert main(["validate-config"]) == 2
    assert "give the configuration file to check" in capsys.readouterr().err
    assert main(["validate-config", "--schema"]) == 0


def test_validate_config_refuses_a_file_with_schema(tmp_path, capsys) -> None:
    """`validate-config --schema bad.yaml` printed the schema and exited 0 without looking
    at the file: a CI step with an extra --schema passed any file. Now refused (exit 2)."""
    from daemon.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: [{name: door, url: rtsp://x, fsp: 5}]\n")
    for extra in ([], ["--settings-only"]):
        assert main(["validate-config", "--schema", *extra, str(bad)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert f"error: --schema lists the settings and checks no file: run `facewatch validate-config {bad}`" in err  # fmt: skip


def test_run_and_validate_config_take_facewatch_config_as_status_does(
    capsys, caplog, monkeypatch, tmp_path
) -> None:
    """A container's FACEWATCH_CONFIG=/config/facewatch.yaml with `facewatch run`: `status`
    and `archive list` read that file, `run` ran the bundled demo (its clip as camera
    hamilton, .demo/ next to the code, MQTT on 127.0.0.1:1883) and the health check found
    no daemon. `run` and `validate-config` without a file now take $FACEWATCH_CONFIG, else
    the service's /etc/facewatch/facewatch.yaml, else (run only) the demo, and the log
    says which and why; --help says so."""
    from daemon import config, service
    from daemon.cli import main

    clip = REPO / "configs" / "demo" / "hamilton_360p.mp4"
    mine = tmp_path / "facewatch.yaml"
    mine.write_text(
        f"node_id: box\ncameras: [{{name: door, url: {str(clip)!r}}}]\n"
        "recognition: {model: null}\nmqtt: {enabled: false}\n"
    )
    ran: list[str | None] = []

    class Ran:  # the daemon itself, which these tests need not start
        def __init__(self, cfg: object, run_for_s: object, config_path: str) -> None:
            self.left_behind: list[str] = []
            ran.append(config_path)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(service, "Service", Ran)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(config, "SERVICE_CONFIG", tmp_path / "etc" / "facewatch.yaml")
    monkeypatch.setenv("FACEWATCH_CONFIG", str(mine))
    with caplog.at_level("INFO", logger="daemon.run_cli"):
        assert main(["run"]) == 0
    assert ran == [str(mine)]
    assert f"config {mine}: named by $FACEWATCH_CONFIG (no --config given)" in caplog.text
    assert main(["validate-config"]) == 0
    assert capsys.readouterr().out.startswith(f"{mine}: valid (1 of 1 cameras enabled")

    mine.write_text("cameras: [{name: door, url: x.mp4}]\ncolour: red\n")  # exit 2, named
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "colour" in err and f"{mine} is named by $FACEWATCH_CONFIG" in err, err

    monkeypatch.delenv("FACEWATCH_CONFIG")  # the service's config, mounted where it lives
    config.SERVICE_CONFIG.parent.mkdir()
    config.SERVICE_CONFIG.write_text(f"cameras: [{{name: door, url: {str(clip)!r}}}]\n")
    caplog.clear()
    with caplog.at_level("INFO", logger="daemon.run_cli"):
        assert main(["run"]) == 0
    assert ran[-1] == str(config.SERVICE_CONFIG)
    assert "the service's (no --config given, no $FACEWATCH_CONFIG)" in caplog.text

    config.SERVICE_CONFIG.unlink()  # neither: the demo, with a WARNING
    caplog.clear()
    with caplog.at_level("INFO", logger="daemon.run_cli"):
        assert main(["run"]) == 0
    assert ran[-1] == str(config.DEFAULT_CONFIG)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [("WARNING", f"config {config.DEFAULT_CONFIG}: the demo's (no --config "
                     f"given, no $FACEWATCH_CONFIG, no {config.SERVICE_CONFIG})")], said  # fmt: skip

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "default: $FACEWATCH_CONFIG, else" in " ".join(capsys.readouterr().out.split())


class _ListAsPython310Sees(types.GenericAlias):
    """list[X] as Python 3.10 (requires-python's floor) sees it: a type, to isinstance."""

    @property
    def __class__(self):
        return type


def test_a_camera_typo_and_the_schema_on_python_3_10(monkeypatch, capsys) -> None:
    """Python 3.10 calls list[CameraConfig] a class: a misspelt camera key crashed run and
    validate-config with "issubclass() arg 1 must be a class", and --schema always did."""
    from daemon.cli import main
    from daemon.config import Config

    cameras = Config.model_fields["cameras"]
    monkeypatch.setattr(cameras, "annotation", _ListAsPython310Sees(list, (CameraConfig,)))
    assert isinstance(cameras.annotation, type), "the stand-in behaves as on 3.10"
    with pytest.raises(ConfigError, match=re.escape("(door).fsp: unknown key (did you mean fps?)")):
        parse_config({"cameras": [{**CAMERA, "fsp": 5}]})
    assert main(["validate-config", "--schema"]) == 0
    assert "cameras[].fps (default 5.0" in capsys.readouterr().out


def test_every_problem_of_a_file_is_listed_at_once(tmp_path, monkeypatch, capsys) -> None:
    """An unset variable, a misspelt key, an empty URL, a value out of range and a reference
    that is none: one run of validate-config names them all, with a suggestion for the key."""
    from daemon.cli import main

    monkeypatch.delenv("FACEWATCH_UNSET_VAR", raising=False)
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "cameras:\n"
        "  - {name: a, url: '${FACEWATCH_UNSET_VAR}', fsp: 5}\n"
        "  - {name: b, url: ''}\n"
        "  - {name: c, url: 'rtsp://u:${credential:}@h/s'}\n"
        "batching: {max_batch: 0}\n"
        "detection: {thresholds: 0.7, ignore: [[[0, 0], [1, 0], [1, 1]]]}\n"
    )
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    for line in [
        "cameras[0] (a).url: environment variable FACEWATCH_UNSET_VAR is not set",
        "cameras[0] (a).fsp: unknown key (did you mean fps?)",
        "cameras[1] (b).url: empty",
        "cameras[2] (c).url: ${credential:} is no reference",
        "batching.max_batch: Input should be greater than or equal to 1",
        "detection.thresholds: expected a list of values",
        # the daemon's warning about a face that never leaves names the key; pasted at the top
        "detection.ignore: unknown key here: it is set per camera, as cameras[].detection.ignore",
    ]:
        assert f"\n  {line}" in err, err
    assert "cameras[0] (a).url: unknown scheme" not in err, "the unset variable says it all"


def test_weakened_security_is_said_out_loud(tmp_path, capsys, monkeypatch) -> None:
    """An insecure broker certificate check, a password over plain TCP to another host, a
    camera over TLS whose certificate nobody checks (FFmpeg's options replaced, without
    tls_verify;1): valid, and each named."""
    from daemon.cli import main

    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|tls_verify;0")
    path = tmp_path / "weak.yaml"
    base = (
        "cameras:\n"
        "  - {name: door, url: 'rtsps://u:p4ss@10.0.0.5/s'}\n"
        "  - {name: yard, url: 'rtsp://10.0.0.6/s'}\n"
    )
    path.write_text(base + "mqtt: {host: broker.lan, password: s3cret-pw, tls: {insecure: true}}\n")
    assert main(["validate-config", "--settings-only", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: mqtt.tls.insecure: true: the broker's certificate is not checked" in err
    assert "warning: cameras[0] (door).url: the camera's TLS certificate is not checked" in err
    assert "(yard)" not in err and "s3cret-pw" not in err
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS")  # facewatch's: it is checked
    path.write_text(base + "mqtt: {host: broker.lan, password: s3cret-pw}\n")
    assert main(["validate-config", "--settings-only", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: mqtt.password: sent in the clear to broker.lan" in err
    assert "(door)" not in err
    path.write_text("cameras: [{name: yard, url: 'rtsp://h/s'}]\nmqtt: {password: s3cret-pw}\n")
    assert main(["validate-config", "--settings-only", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err  # to 127.0.0.1: the same machine
    gallery = tmp_path / "gallery.sqlite"  # copied in with cp: 0644
    gallery.write_bytes(b"")
    os.chmod(gallery, 0o644)
    path.write_text(
        f"cameras: [{{name: yard, url: 'rtsp://h/s'}}]\nrecognition: {{gallery: {gallery}}}\n"
    )
    assert main(["validate-config", "--settings-only", str(path)]) == 0
    assert f"warning: recognition.gallery: {gallery} is readable by others (mode 0644)" in (
        capsys.readouterr().err
    )


def test_confirm_frames_below_min_votes_is_warned_of(tmp_path, capsys, caplog) -> None:
    """tracking.confirm_frames lowered below min_votes names no known face sooner (its votes
    decide, one a frame) but announces brief false detections as strangers as they leave
    (37 in 5 visits with 1, against 3 in 7 with 3, in a review): validate-config and run's
    start say so; not at min_votes or above, nor without recognition."""
    import logging

    from daemon import preflight_warnings
    from daemon.cli import main

    path = tmp_path / "fast.yaml"
    camera = "cameras: [{name: door, url: 'rtsp://10.0.0.6/s'}]\n"

    def warned(tracking: str, recognition: str = "") -> str:
        path.write_text(camera + f"tracking: {tracking}\n" + recognition)
        assert main(["validate-config", "--settings-only", str(path)]) == 0
        return capsys.readouterr().err

    said = "warning: tracking.confirm_frames: 1 is below tracking.min_votes (3): a known face "
    assert said in warned("{confirm_frames: 1}")
    assert "a face seen in as few as 1 frame(s), most often a false detection" in (
        warned("{confirm_frames: 1}")
    )
    assert "below tracking.min_votes (4)" in warned("{confirm_frames: 3, min_votes: 4}")
    assert "warning" not in warned("{confirm_frames: 3}")
    assert "warning" not in warned("{confirm_frames: 1, min_votes: 1}")
    assert "warning" not in warned("{confirm_frames: 1}", "recognition: {model: null}\n")
    path.write_text(camera + "tracking: {confirm_frames: 2}\n")
    with caplog.at_level(logging.WARNING, logger="daemon.service"):  # as run logs them
        preflight_warnings.log_warnings(load_config(str(path)), logging.getLogger("daemon.service"))
    assert [r.getMessage()[:55] for r in caplog.records] == [
        "tracking.confirm_frames: 2 is below tracking.min_votes "
    ]


@pytest.mark.parametrize(
    ("prefix", "why"),
    [("$SYS/facewatch", "the broker's own"), ("home//facewatch", "an empty topic level"),
     ("a/+/b", "wildcards")],
)  # fmt: skip
def test_a_topic_prefix_the_broker_would_drop_or_mangle_is_refused(prefix, why) -> None:
    for key in ("topic_prefix", "home_assistant"):
        mqtt = {key: prefix} if key == "topic_prefix" else {key: {"discovery_prefix": prefix}}
        with pytest.raises(ConfigError, match=why):
            parse_config({"cameras": [CAMERA], "mqtt": mqtt})
    config = parse_config({"cameras": [CAMERA], "mqtt": {"topic_prefix": "/home/facewatch/"}})
    assert config.mqtt.topic_prefix == "/home/facewatch"  # a leading / is a topic too


def test_validate_config_checks_what_run_checks_before_it_starts(
    tmp_path, capsys, shared_data
) -> None:
    """Files the daemon needs at its start, each problem named with its key, all at once, and
    nothing created on the way; the same file with the problems fixed is valid."""
    from daemon.cli import main

    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    video = shared_data / "videos" / "hamilton_360p.mp4"
    settings = {
        "cameras": [
            {"name": "gone", "url": str(tmp_path / "gone.mp4")},
            {"name": "notes", "url": str(notes)},
            {"name": "ok", "url": str(video)},
        ],
        "engines": {"mtcnn_dir": str(tmp_path)},
        "recognition": {"model": str(tmp_path / "nope.onnx")},
        "mqtt": {"spool_dir": str(notes / "spool"), "tls": {"ca_file": str(tmp_path / "ca.pem")}},
        "events": {"jsonl_file": str(notes / "events.jsonl")},
        "archive": {"dir": str(notes / "faces")},
    }
    path = tmp_path / "paths.yaml"
    path.write_text(json.dumps(settings))
    before = sorted(tmp_path.rglob("*"))
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "valid settings, but `run` (as " in err and "would stop at once" in err, err
    for key in [
        "cameras[0] (gone).url",
        "cameras[1] (notes).url",
        "engines.mtcnn_dir",
        "recognition.model: ",
        "mqtt.tls.ca_file",
        "mqtt.spool_dir",
        "events.jsonl_file",
        "archive.dir",
    ]:
        assert f"\n  {key}" in err, (key, err)
    assert "(ok).url" not in err
    assert sorted(tmp_path.rglob("*")) == before, "validate-config creates nothing"

    settings["cameras"] = settings["cameras"][2:]
    for key in ("engines", "recognition", "mqtt", "events", "archive"):
        del settings[key]
    settings["archive"] = {"dir": str(tmp_path / "new" / "faces")}
    path.write_text(json.dumps(settings))
    assert main(["validate-config", str(path)]) == 0
    shipped = MODELS / "facenet" / "facenet.onnx"  # recognition.model: auto
    assert f"valid (1 of 1 cameras enabled; recognition with {shipped})" in (
        capsys.readouterr().out
    )
    settings["recognition"] = {"model": None}
    path.write_text(json.dumps(settings))
    assert main(["validate-config", str(path)]) == 0
    assert "enabled; detection only (recognition.model: null))" in capsys.readouterr().out


def _self_signed(folder, name: str) -> None:
    """NAME.crt and NAME.key in ``folder``: a self-signed certificate and its key."""
    import subprocess

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt"],
        cwd=folder, check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_a_tls_file_that_is_not_what_its_key_says_is_named_by_validate_config_and_run(
    tmp_path, capsys
) -> None:
    """A CA file of random bytes, a certificate cut short, a key of another certificate:
    validate-config said `valid`, and `run` stopped with OpenSSL's words alone ('mqtt.tls:
    [X509] PEM lib'), naming neither the key nor the file. Both say which file and why."""
    import shutil

    from daemon.cli import main
    from daemon.mqtt_tls import RenewableContext, TlsFileError

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command, to make the certificates")
    for name in ("a", "b"):
        _self_signed(tmp_path, name)
    (tmp_path / "garbage.crt").write_bytes(bytes(range(256)) * 2)
    (tmp_path / "cut.crt").write_text(
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    )
    cases = {
        "ca_file: garbage.crt": f"mqtt.tls.ca_file: {tmp_path}/garbage.crt: not a PEM certificate (",
        "cert_file: cut.crt, key_file: a.key": f"mqtt.tls.cert_file: {tmp_path}/cut.crt: not a PEM certificate (",
        "cert_file: a.crt, key_file: b.key": f"mqtt.tls.key_file: {tmp_path}/b.key: not the private key of mqtt.tls.cert_file {tmp_path}/a.crt (",
        "cert_file: a.crt, key_file: a.crt": f"mqtt.tls.key_file: {tmp_path}/a.crt: not a PEM private key (",
        "cert_file: a.crt": f"mqtt.tls.cert_file: {tmp_path}/a.crt: holds no private key of its certificate, and mqtt.tls.key_file is not set (",
    }  # fmt: skip
    path = tmp_path / "f.yaml"
    base = "cameras: [{name: door, url: 'rtsp://h/s'}]\nrecognition: {model: null}\n"
    for tls, said in cases.items():
        path.write_text(base + f"mqtt: {{tls: {{{tls}}}}}\n")
        assert main(["validate-config", str(path)]) == 2, tls
        err = capsys.readouterr().err
        assert f"would stop at once:\n  {said}" in err, err
        config = load_config(path).mqtt.tls
        assert config is not None
        with pytest.raises(TlsFileError) as refused:  # what `run`'s MQTT publisher loads
            RenewableContext(config)
        assert str(refused.value).startswith(said), refused.value
        assert "_ssl.c" not in str(refused.value)
    path.write_text(base + "mqtt: {tls: {ca_file: b.crt, cert_file: a.crt, key_file: a.key}}\n")
    assert main(["validate-config", str(path)]) == 0


@pytest.mark.parametrize("name", ["default.yaml", "rtsp-example.yaml", "jetson-example.yaml"])
def test_the_shipped_configs_settings_are_valid_away_from_their_machine(
    name, monkeypatch, capsys
) -> None:
    """--settings-only: the examples' ${credential:...} and /etc files are not at hand here."""
    from daemon.cli import main

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = DEFAULT_CONFIG.with_name(name)
    assert main(["validate-config", "--settings-only", str(path)]) == 0
    assert f"{path}: settings valid (files not checked)" in capsys.readouterr().out
    if name != "default.yaml":  # as they are, they need the machine they are written for
        assert main(["validate-config", str(path)]) == 2


@pytest.mark.parametrize("url", ["192.168.1.50:554/stream", "cam.lan:554/1", "10.0.0.2"])
def test_a_camera_address_without_its_scheme_gets_one_suggested(url) -> None:
    with pytest.raises(ConfigError, match=rf"\(door\)\.url: no scheme: did you mean rtsp://{url} "):
        parse_config({"cameras": [{"name": "door", "url": url}]})


CAMERA_YAML = 'cameras: [{name: door, url: "rtsp://10.0.0.5/s"}]\n'


def test_ipv6_addresses_are_taken_with_or_without_brackets(tmp_path) -> None:
    """mqtt.host and metrics.address written as in a URL, "[::1]", passed validate-config,
    then `run` stopped: 'metrics: cannot listen on [::1]:9708: Name or service not known'
    (and the broker's client looked the bracketed name up): they are read as ::1. Digits
    and ':' unquoted, YAML reads a number (in base 60): refused, with how to write it."""
    path = tmp_path / "facewatch.yaml"
    path.write_text(CAMERA_YAML + 'mqtt: {host: "[fd00::10]"}\nmetrics: {address: "[::]"}\n')
    config = load_config(path, secrets=False)
    assert (config.mqtt.host, config.metrics.address) == ("fd00::10", "::")
    path.write_text(CAMERA_YAML + 'mqtt: {host: "::1"}\nmetrics: {address: "::1"}\n')
    config = load_config(path, secrets=False)
    assert (config.mqtt.host, config.metrics.address) == ("::1", "::1")
    path.write_text(CAMERA_YAML + "mqtt:\n  host: 2001:0:0:0:0:0:0:1\n")
    with pytest.raises(ConfigError, match=r"mqtt\.host: a number: .* write an IPv6 address in q"):
        load_config(path, secrets=False)


QUOTES = 'write an IPv6 address in quotes: address: "::", host: "fd00::10"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics:\n  address: ::\n", QUOTES),
        ("metrics: {address: ::}\n", QUOTES),
        ("mqtt:\n  host: fd00::\n", QUOTES),
        ("mqtt:\n  host: [::1]\n", QUOTES),
        ("mqtt:\n  host: [fd00::10]\n", "mqtt.host: a list: YAML reads [...] unquoted as one"),
    ],
)
def test_an_ipv6_address_left_unquoted_is_said_to_need_quotes(tmp_path, text, expected) -> None:
    """Unquoted, "::" and an address ending in "::" or in brackets are no YAML (it said
    'mapping values are not allowed here', or 'expected the node content, but found ':''),
    and [fd00::10] is a list ('Input should be a valid string'): each says how to write it."""
    path = tmp_path / "facewatch.yaml"
    path.write_text(CAMERA_YAML + text)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(path, secrets=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CAMERA_YAML + "mqtt: {port: " + "1" * 5000 + "}\n", "cannot be read: Exceeds the limit"),
        ("x: &a [*a]\n" + CAMERA_YAML, "nested over 32 levels deep (an alias inside its anchor?)"),
        ("x: " + "[" * 2000 + "]" * 2000 + "\n" + CAMERA_YAML, "cannot be read: nested too deep"),
        (
            CAMERA_YAML + 'recognition: {gallery: "g\\0.sqlite"}\n',
            "recognition.gallery: holds a NUL",
        ),
        (CAMERA_YAML + "0: 1\n", "[0]: Keys should be strings"),
        (CAMERA_YAML + "? !!set {a}\n: 1\n", "not valid YAML"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{k}: &{k} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, k in zip("abcde", "bcdef", strict=True)
            )
            + CAMERA_YAML,
            "more than 100000 values (YAML aliases of aliases?)",
        ),
    ],
)
def test_a_config_file_that_cannot_be_taken_is_a_config_error_not_a_traceback(
    tmp_path, text, expected
) -> None:
    """Found by fuzzing: each was a traceback (exit 1, not validate-config's 2), or, for
    aliases of aliases (a few hundred bytes), minutes and gigabytes before any check."""
    path = tmp_path / "facewatch.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(path, secrets=False)


@pytest.mark.parametrize(
    "cameras",
    [
        [{"name": "door", "url": "192.168.1.5:554/stream?user=admin&password=hunter22"}],
        [{"name": "rtsp://admin:hunter22@192.168.1.5/stream", "url": "door.mp4"}],
        [{"name": "door", "url": "rtsps://admin:my\\hunter22 x@10.0.0.5/stream#1"}],
    ],
)
def test_config_errors_do_not_show_a_cameras_password(cameras) -> None:
    """The message quoted the URL (no scheme), the key path the camera's name (a URL given as
    the name), and repr() doubled a backslash, so the remembered password no longer matched."""
    with pytest.raises(ConfigError) as error:
        parse_config({"cameras": cameras}, "facewatch.yaml")
    assert "hunter22" not in str(error.value), error.value


def test_validate_config_refuses_a_gallery_run_would_and_warns_of_its_old_threshold(
    tmp_path, capsys
) -> None:
    """A gallery of another model (a model changed, or re-saved), or enrolled without flip
    when the config turns it on: `run` exits 2, which systemd does not retry, and
    validate-config said "valid". A gallery still at the threshold galleries started at
    before (LFW's best: 0.19 for the shipped model) names strangers far more often than the
    model's FAR-1e-3 one, where new galleries start: a warning says how to move it."""
    from daemon.cli import main
    from daemon.gallery import Gallery
    from engines.base import ModelMetadata
    from engines.facenet import model_id_of, starting_threshold

    shipped = MODELS / "facenet" / "facenet.onnx"
    meta = ModelMetadata.load(shipped)
    model_id = model_id_of(meta, shipped)
    gallery = tmp_path / "gallery.sqlite"
    path = tmp_path / "facewatch.yaml"
    clip = MODELS.parent / "configs" / "demo" / "hamilton_360p.mp4"

    def validate(flip: bool = False, threshold: float = 1.1, made_by: str = model_id) -> str:
        gallery.unlink(missing_ok=True)
        Gallery.create(gallery, made_by, meta.embedding_size or 128, threshold).close()
        settings = {"cameras": [{"name": "door", "url": str(clip)}]}
        settings["recognition"] = {"gallery": str(gallery), "flip": flip}  # model: auto
        path.write_text(json.dumps(settings))
        code = main(["validate-config", str(path)])
        out, err = capsys.readouterr()
        return f"{code}\n{out}{err}"

    other = validate(made_by="facenet-vggface2@sha256:0123456789abcdef")
    assert other.startswith("2\n") and "recognition.gallery: " in other, other
    assert "enrolled with model 'facenet-vggface2@sha256:0123456789abcdef'" in other
    flipped = validate(flip=True)
    assert flipped.startswith("2\n") and "enrolled without --flip" in flipped, flipped
    start = starting_threshold(meta.extra)
    assert start is not None
    old = validate(threshold=meta.extra["lfw"]["best_threshold"])
    assert old.startswith("0\n") and "LFW best-accuracy one" in old, old
    assert f"gallery threshold --default {start:.3f} --gallery {gallery}" in old
    assert "warning" not in validate(threshold=start)


def test_a_damaged_model_file_is_not_called_another_models_gallery(tmp_path, capsys) -> None:
    """A FaceNet file cut short (an interrupted copy at an upgrade, a failing disk) beside
    its gallery was reported as "a gallery enrolled with another model ... enroll everyone
    again": hours of enrollment that would not mend it. The file is named, both ids, and
    the advice is to reinstall it; re-enrolling only if it was replaced on purpose."""
    import shutil

    from daemon import preflight
    from daemon.cli import main
    from daemon.gallery import Gallery
    from engines.base import ModelMetadata
    from engines.facenet import model_id_of

    shipped = MODELS / "facenet" / "facenet.onnx"
    gallery_id = model_id_of(ModelMetadata.load(shipped), shipped)
    damaged = tmp_path / "facenet" / "facenet.onnx"
    damaged.parent.mkdir()
    damaged.write_bytes(shipped.read_bytes()[:100_000])
    shutil.copy(shipped.with_suffix(".json"), damaged.with_suffix(".json"))
    damaged_id = model_id_of(ModelMetadata.load(damaged), damaged)
    gallery = tmp_path / "gallery.sqlite"
    Gallery.create(gallery, gallery_id, 128, 0.15).close()
    clip = MODELS.parent / "configs" / "demo" / "hamilton_360p.mp4"
    path = tmp_path / "facewatch.yaml"
    settings = {"cameras": [{"name": "door", "url": str(clip)}],
                "recognition": {"model": str(damaged), "gallery": str(gallery)}}  # fmt: skip
    path.write_text(json.dumps(settings))
    said = (
        f"recognition.model: {damaged}: this file differs from the model the gallery "
        f"{gallery} was enrolled with (the gallery's {gallery_id!r}, the file's {damaged_id!r}"
    )
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert said in err, err
    assert "it is damaged" in err and "reinstall the file the gallery was enrolled with" in err
    with pytest.raises(ConfigError) as refused:  # what `run` stops on, before any engine
        preflight.check(load_config(path))
    assert str(refused.value).startswith(said)


def test_auto_without_a_model_beside_a_gallery_of_people_is_a_config_error(
    tmp_path, capsys, monkeypatch
) -> None:
    """recognition.model: auto and the model gone (a reinstall, FACEWATCH_MODELS elsewhere),
    its gallery holding people: the daemon ran detection only with one warning, every event
    identity null. Now exit 2 naming the gallery and the model to restore; with no gallery,
    or an empty one, detection only as documented."""
    from daemon import preflight
    from daemon.cli import main
    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment

    monkeypatch.setenv("FACEWATCH_MODELS", str(tmp_path / "models"))
    clip = MODELS.parent / "configs" / "demo" / "hamilton_360p.mp4"
    gallery = tmp_path / "gallery.sqlite"
    path = tmp_path / "facewatch.yaml"
    settings = {"cameras": [{"name": "door", "url": str(clip)}],
                "engines": {"mtcnn_dir": str(MODELS / "mtcnn")},
                "recognition": {"model": "auto", "gallery": str(gallery)}}  # fmt: skip
    path.write_text(json.dumps(settings))
    model_id = "dlib-resnet-v1@sha256:ca0dff3d5a9e8699"

    def validate() -> str:
        code = main(["validate-config", str(path)])
        out, err = capsys.readouterr()
        return f"{code}\n{out}{err}"

    assert "detection only: no FaceNet model" in validate()  # no gallery yet
    with Gallery.create(gallery, model_id + "+flip", 2, 0.15) as made:
        assert validate().startswith("0\n")  # an empty one
        made.enroll([Enrollment("ada", np.array([1.0, 0.0]), "ada.jpg")])
    said = (
        f"recognition.model: auto: no FaceNet model at {tmp_path / 'models/facenet/facenet.onnx'}, "
        f"but the gallery {gallery} holds 1 person, enrolled with '{model_id}': restore the "
        "model this gallery was enrolled with"
    )
    refused = validate()
    assert refused.startswith("2\n") and said in refused, refused
    with pytest.raises(ConfigError, match="restore the model this gallery"):  # run: exit 2
        preflight.check(load_config(path))


def test_the_smallest_face_recognised_is_the_cameras_own_else_the_recognition_sections() -> None:
    """recognition.min_face_px (30 by default: the demo's performer, 36 px, is still named),
    and a camera's own where it gives one (0: every face it finds)."""
    config = parse_config(
        {
            "cameras": [
                {"name": "door", "url": "door.mp4"},
                {"name": "yard", "url": "yard.mp4", "recognition": {"min_face_px": 0}},
            ]
        }
    )
    assert [config.min_face_px(c) for c in config.cameras] == [30, 0]
    raw = {"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": {"min_face_px": 48}}
    assert parse_config(raw).min_face_px(parse_config(raw).cameras[0]) == 48


def test_validate_config_and_run_warn_of_a_grown_gallery_still_at_its_starting_threshold(
    tmp_path, capsys, caplog
) -> None:
    """A stranger is compared with every enrolled face: at the model's starting threshold
    (0.154 per comparison) 1,565 people named 83 % of strangers, and the warning's fixed
    text said 14-34 %. From 120 faces, validate-config and run say how many strangers this
    gallery would name, measured on its own faces, and point to `gallery calibrate`; run
    logs it as an error above a fifth. A threshold the user set, a small gallery, or one
    that would name under 2 % of strangers (it said 'under 1% ...: run `facewatch gallery
    calibrate`', as if something were wrong) is not warned of."""
    import logging

    from daemon import preflight_warnings
    from daemon.cli import main
    from daemon.config_file import load_config
    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment
    from engines.base import ModelMetadata
    from engines.facenet import model_id_of, starting_threshold

    shipped = MODELS / "facenet" / "facenet.onnx"
    meta = ModelMetadata.load(shipped)
    start = starting_threshold(meta.extra)
    assert start is not None
    gallery = tmp_path / "gallery.sqlite"
    path = tmp_path / "facewatch.yaml"
    clip = MODELS.parent / "configs" / "demo" / "hamilton_360p.mp4"
    path.write_text(
        json.dumps(
            {
                "cameras": [{"name": "door", "url": str(clip)}],
                "recognition": {"gallery": str(gallery)},
            }
        )
    )
    rng = np.random.default_rng(0)
    apart = rng.normal(size=(120, meta.embedding_size or 128))  # 20 people, far from another
    alike = apart[:1] + 0.05 * rng.normal(size=apart.shape)  # all near one face: look-alikes
    for vectors in (apart, alike):
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    some = apart.copy()  # 3 pairs of look-alikes: p0 and p1, p2 and p3, p4 and p5
    for k in (0, 2, 4):
        some[k + 1] = some[k] + 0.01 * rng.normal(size=some.shape[1])
        some[k + 1] /= np.linalg.norm(some[k + 1])

    def validate(faces: int, threshold: float, vectors: np.ndarray = apart) -> str:
        gallery.unlink(missing_ok=True)
        with Gallery.create(gallery, model_id_of(meta, shipped), vectors.shape[1], threshold) as g:
            g.enroll([Enrollment(f"p{k % 20}", v, f"s{k}") for k, v in enumerate(vectors[:faces])])
        code = main(["validate-config", str(path)])
        out, err = capsys.readouterr()
        return f"{code}\n{out}{err}"

    def logged() -> list[tuple[int, str]]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="daemon.service"):  # as run logs them
            preflight_warnings.log_warnings(
                load_config(str(path)), logging.getLogger("daemon.service")
            )
        return [(r.levelno, r.getMessage()) for r in caplog.records if "gallery" in r.message]

    fine = validate(120, start)  # 20 people far from each other: nobody named
    assert fine.startswith("0\n") and "warning" not in fine and "calibrate" not in fine, fine
    assert logged() == []
    grown = validate(120, start, some)
    said = (
        f"recognition.gallery: {gallery}: 120 faces of 20 people, still at the threshold a "
        f"new gallery starts at ({start:.3f}): at it about 5% of strangers would be named as "
        "one of your 20 people (measured on your own faces, each of 120 taken as a stranger's"
    )
    assert grown.startswith("0\n") and said in grown, grown
    assert "run `facewatch gallery calibrate`, which chooses a threshold" in grown
    assert [(level, message[: len(said)]) for level, message in logged()] == [
        (logging.WARNING, said)
    ]
    crowd = validate(120, start, alike)
    assert "at it about 100% of strangers would be named as one of your 20 people" in crowd
    [(level, message)] = logged()
    assert level == logging.ERROR and "about 100% of strangers" in message
    assert "warning" not in validate(119, start)
    assert "warning" not in validate(120, 0.12, alike)
    assert logged() == []


def test_validate_config_reads_the_gallery_whole_and_warns_of_damage_sqlite_finds(
    tmp_path, capsys
) -> None:
    """validate-config (and run's first check) read only the gallery's meta and names: a
    blob cut short, or a vector no longer of unit length, passed as "valid", and the daemon
    then ran with nobody enrolled or named the wrong person at distance 0. The gallery is
    read whole, as the daemon reads it (exit status 2 naming the face); a damaged index,
    which matching does not read but the next enroll would fail on, is a warning."""
    import sqlite3

    from daemon.cli import main
    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment
    from engines.base import ModelMetadata
    from engines.facenet import model_id_of

    shipped = MODELS / "facenet" / "facenet.onnx"
    meta = ModelMetadata.load(shipped)
    gallery, path = tmp_path / "gallery.sqlite", tmp_path / "facewatch.yaml"
    clip = MODELS.parent / "configs" / "demo" / "hamilton_360p.mp4"
    settings = {"cameras": [{"name": "door", "url": str(clip)}], "recognition": {"gallery": str(gallery)}}  # fmt: skip
    path.write_text(json.dumps(settings))
    size = meta.embedding_size or 128
    vectors = np.random.default_rng(0).normal(size=(2, size)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def validate(sql: str = "", params: tuple = ()) -> str:
        gallery.unlink(missing_ok=True)
        with Gallery.create(gallery, model_id_of(meta, shipped), size) as g:
            g.enroll([Enrollment("ann", vectors[0], "a"), Enrollment("bob", vectors[1], "b")])
        with contextlib.closing(sqlite3.connect(gallery)) as db, db:
            if sql:
                db.execute(sql, params)
        code = main(["validate-config", str(path)])
        out, err = capsys.readouterr()
        return f"{code}\n{out}{err}"

    assert validate().startswith("0\n")
    short = validate("UPDATE embeddings SET vector = ? WHERE id = 2", (vectors[1][:3].tobytes(),))
    said = f"recognition.gallery: {gallery}: bob's face 1 (of 1): 12 bytes, {4 * size} expected"
    assert short.startswith("2\n") and said in short, short
    scaled = validate("UPDATE embeddings SET vector = ? WHERE id = 1", ((vectors[0] * 10).tobytes(),))  # fmt: skip
    assert scaled.startswith("2\n") and "ann's face 1 (of 1): has length 10" in scaled, scaled

    gallery.unlink()
    validate()
    with contextlib.closing(sqlite3.connect(gallery)) as db, db:
        (page,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_embeddings_1'"
        ).fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    with open(gallery, "r+b") as file:  # a bad block in the index enroll checks photos with
        file.seek((page - 1) * page_size)
        file.write(bytes(page_size))
    code = main(["validate-config", str(path)])
    err = capsys.readouterr().err
    said = f"warning: recognition.gallery: {gallery}: SQLite's check finds the file damaged ("
    assert code == 0 and said in err, err
    assert "enrolling, removing or any change will be refused" in err


def test_a_name_starting_with_an_underscore_stays_valid() -> None:
    """Names were letters, digits, '_' and '-'; refusing a leading '-' (it reads as an
    option on a command line) must not refuse the '_garage' a config may already hold."""
    config = parse_config({"cameras": [{"name": "_garage", "url": "x"}], "node_id": "_lab"})
    assert (config.cameras[0].name, config.node_id) == ("_garage", "_lab")


def test_validate_config_checks_the_model_file_as_run_would(tmp_path, capsys) -> None:
    """MTCNN's O-Net, a training checkpoint, an ONNX without its sidecar: `run` exits 2 on
    each, and validate-config said "valid" (or, with a gallery, filed it under
    recognition.gallery and advised enrolling again). Said under recognition.model, and the
    gallery is not checked against a model that cannot run."""
    import shutil

    from daemon.cli import main
    from daemon.gallery import Gallery

    clip = MODELS.parent / "configs" / "demo" / "hamilton_360p.mp4"
    onet, checkpoint, bare = (
        MODELS / "mtcnn" / "onet.onnx",
        tmp_path / "latest.pt",
        tmp_path / "bare.onnx",
    )
    checkpoint.write_bytes(b"not really a checkpoint")
    shutil.copy(MODELS / "mtcnn" / "onet.onnx", bare)
    gallery = tmp_path / "gallery.sqlite"
    Gallery.create(gallery, "facenet@sha256:0123456789abcdef", 128, 0.15).close()
    expected = {
        onet: f"{onet.with_suffix('.json')}: sidecar says kind 'mtcnn-onet', expected 'facenet'",
        checkpoint: f"{checkpoint}: a training checkpoint, not a model facewatch runs",
        bare: f"{bare.with_suffix('.json')}: model sidecar missing",
    }
    path = tmp_path / "facewatch.yaml"
    for model, said in expected.items():
        for where in (tmp_path / "new.sqlite", gallery):  # none yet (enroll comes after), one
            settings = {"cameras": [{"name": "door", "url": str(clip)}],
                        "recognition": {"model": str(model), "gallery": str(where)}}  # fmt: skip
            path.write_text(json.dumps(settings))
            assert main(["validate-config", str(path)]) == 2, model
            err = capsys.readouterr().err
            assert f"\n  recognition.model: {said}" in err, err
            assert "recognition.gallery" not in err, err


def test_validate_config_loads_mtcnns_models_as_run_would(tmp_path, capsys) -> None:
    """An O-Net cut short, R-Net's model copied over P-Net's: validate-config said "valid",
    and `run` stopped at once (exit 2, OpenVINO's lines). Each file is named, one line each."""
    import shutil

    from daemon.cli import main

    folder = tmp_path / "mtcnn"
    folder.mkdir()
    for file in (MODELS / "mtcnn").glob("*net.*"):
        shutil.copy(file, folder)
    (folder / "onet.onnx").write_bytes((MODELS / "mtcnn" / "onet.onnx").read_bytes()[:20_000])
    shutil.copy(folder / "rnet.onnx", folder / "pnet.onnx")
    path = tmp_path / "facewatch.yaml"
    path.write_text(
        "cameras: [{name: door, url: 'rtsp://h/s'}]\nrecognition: {model: null}\n"
        f"engines: {{mtcnn_dir: {folder}}}\n"
    )
    assert main(["validate-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert lines[1] == (
        f"  engines.mtcnn_dir: {folder}/pnet.onnx: not MTCNN's P-Net model: it takes 24x24 "
        "images, P-Net any size (another stage's file copied over it?)"
    )
    cut = f"  engines.mtcnn_dir: {folder}/onet.onnx: OpenVINO cannot load the model: "
    assert lines[2].startswith(cut) and "src/" not in lines[2], lines


def test_validate_config_names_a_video_file_whose_frames_decode_to_no_picture(
    tmp_path, capsys
) -> None:
    """An interlaced video (OpenCV's FFmpeg cannot convert it, and reads it as if all were
    well, all black or one stale picture): a camera of it was valid and never found a face.
    Its camera's url is named with the cause; the same frames progressive are valid."""
    from daemon.cli import main
    from tests.clips import DEMO_CLIP, encoded_clip, opencv_reads_interlaced, read_frames

    frames = read_frames(DEMO_CLIP, count=40)
    interlaced = encoded_clip(tmp_path / "interlaced.mp4", frames, interlaced=True)
    progressive = encoded_clip(tmp_path / "progressive.mp4", frames, interlaced=False)
    settings = {
        "cameras": [
            {"name": "hall", "url": str(interlaced)},
            {"name": "door", "url": str(progressive)},
        ],
        "recognition": {"model": None},
    }
    path = tmp_path / "facewatch.yaml"
    path.write_text(json.dumps(settings))
    if opencv_reads_interlaced(interlaced):  # (OpenCV 5.1 converts it: a video like any)
        assert main(["validate-config", str(path)]) == 0, capsys.readouterr().err
        return
    assert main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"\n  cameras[0] (hall).url: {interlaced}: its first 39 frames decode " in err, err
    assert "an interlaced video? OpenCV's FFmpeg cannot convert interlaced video: re-encode" in err
    assert "(door)" not in err
    settings["cameras"] = settings["cameras"][1:]
    path.write_text(json.dumps(settings))
    assert main(["validate-config", str(path)]) == 0, capsys.readouterr().err


def test_the_mqtt_version_is_3_1_1_unless_set_to_5_as_yaml_writes_it(tmp_path) -> None:
    """MQTT 3.1.1 by default (MQTT 5 clients meet mosquitto 2.0's message_size_limit as a
    protocol error); 5, whose PUBACK says when the broker's ACL refused a message, written
    as YAML reads it (``protocol: 5`` is a number there)."""
    import paho.mqtt.client as paho

    from daemon.mqtt import MqttPublisher
    from daemon.spool import Spool

    path = tmp_path / "c.yaml"
    versions = {}
    for written in ("", "protocol: 5", "protocol: 3.1.1"):
        path.write_text(
            f"cameras: [{{name: door, url: door.mp4}}]\nmqtt:\n  port: 1\n  {written}\n"
        )
        config = load_config(path)
        spool = Spool(tmp_path / "spool", 10)
        client = MqttPublisher(config.mqtt, "n", spool).client
        versions[written] = (config.mqtt.protocol, client.protocol)
        spool.close()
    assert versions == {
        "": ("3.1.1", paho.MQTTv311),
        "protocol: 5": ("5", paho.MQTTv5),
        "protocol: 3.1.1": ("3.1.1", paho.MQTTv311),
    }
    with pytest.raises(ConfigError, match=r"mqtt.protocol"):
        parse_config({"cameras": [CAMERA], "mqtt": {"protocol": 4}})
