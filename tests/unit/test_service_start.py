"""The daemon's start (daemon.service_start): the engines' load, a stop or Ctrl-C during it,
what the start says, and what stops it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from daemon.config import ConfigError
from daemon.config_file import parse_config
from daemon.events import EventSinks
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
from daemon.scheduler import Pipeline
from tests.conftest import REPO
from tests.pipeline_fakes import OneFace as _OneFace
from tests.pipeline_fakes import galleries_closed  # noqa: F401  (a fixture, used by name)
from tests.pipeline_fakes import gallery_of_ann_and_bob as _gallery_of_ann_and_bob

pytestmark = pytest.mark.usefixtures("galleries_closed")


@pytest.mark.parametrize(
    ("failure", "code", "said"),
    [
        (  # `ulimit -v`, LimitAS=, vm.overcommit_memory=2: what the review saw
            "OpenVINO cannot load the model: Exception from src/inference/src/cpp/core.cpp:117:"
            "\nstd::bad_alloc",
            1,
            "out of memory while loading the detector (MTCNN in ",
        ),
        ("CUDA error in cudaMalloc: cudaErrorMemoryAllocation (out of memory)", 1, "GPU memory"),
        (MemoryError(), 1, "out of memory while loading the detector"),  # wrapped by an engine
        ("OpenVINO cannot load the model: not an IR file", 2, "cannot load the model"),
    ],
)
def test_memory_running_out_while_the_engines_load_exits_1_not_as_a_config_error(
    tmp_path, monkeypatch, capsys, failure, code, said
) -> None:
    """Short of memory at start (a TensorRT plan while Frigate holds the GPU, bad_alloc
    under an address-space limit) was a ConfigError, exit status 2, which the unit's
    RestartPreventExitStatus=2 never retries: a passing shortage became an outage. It is
    exit status 1 (retried), saying out of memory while loading what, and how much memory
    there was; what the config names wrongly stays exit status 2."""
    from daemon.cli import main
    from engines.base import EngineError

    def load_detector(*args: object, **kwargs: object) -> None:
        if isinstance(failure, str):
            raise EngineError(f"models/mtcnn/pnet.onnx: {failure}")
        try:
            raise failure
        except MemoryError:  # (as the engines wrap what their runtime raised)
            raise EngineError("models/mtcnn/pnet.onnx: cannot load the model: ") from None

    monkeypatch.setattr("daemon.engine_choice.load_detector", load_detector)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    clip = REPO / "configs" / "demo" / "hamilton_360p.mp4"
    config = tmp_path / "facewatch.yaml"
    config.write_text(
        f"cameras: [{{name: door, url: {str(clip)!r}}}]\nrecognition: {{model: null}}\n"
        "mqtt: {enabled: false}\nmetrics: {enabled: false}\n"
    )
    assert main(["run", "--config", str(config)]) == code
    err = capsys.readouterr().err
    assert said in err, err
    if code == 1:
        assert "MB free on this machine" in err, err
        assert "error: out of memory while loading" in err, err


@pytest.mark.parametrize(("usable", "decoders"), [(1, 1), (16, 2)])
def test_a_cameras_decoder_and_opencvs_pool_keep_to_the_cpu_budget(
    monkeypatch, usable, decoders
) -> None:
    """Under systemd's CPUQuota= OpenCV counts the host's cores: each camera's FFmpeg
    decoder and OpenCV's pool ran a thread per host core (16 in a 2-core quota, some 80 MB
    more for four 1080p cameras). A camera decodes with at most DECODER_THREADS, fewer when
    the process may use fewer cores; the daemon's start sets OpenCV's pool to the engines'
    thread budget."""
    from daemon import camera_open, service

    monkeypatch.setattr(camera_open, "usable_cpus", lambda: usable, raising=False)
    capture = camera_open.open_capture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    try:
        assert capture.get(cv2.CAP_PROP_N_THREADS) == decoders
    finally:
        capture.release()

    config = parse_config(
        {
            "cameras": [{"name": "door", "url": "x.mp4"}],
            "recognition": {"model": None},
            "engines": {"threads": 1 if usable == 1 else 3},
        }
    )
    daemon = service.Service(config)
    monkeypatch.setattr("daemon.engine_choice.load_detector", lambda *a, **k: object())
    monkeypatch.setattr(daemon, "_warm_up", lambda *a: None)
    kept = cv2.getNumThreads()
    try:
        daemon.load_engines()
        assert cv2.getNumThreads() == (1 if usable == 1 else 3)
    finally:
        cv2.setNumThreads(kept)


def test_a_stop_during_the_engines_load_is_said_and_begins_no_further_load(
    monkeypatch, caplog
) -> None:
    """SIGTERM while a TensorRT plan is built at the first start (minutes, one call):
    nothing was said until the build ended, and then FaceNet was loaded too, past the
    unit's TimeoutStopSec. The signal is said at once with what it waits for, and no
    further model is loaded."""
    import signal
    from pathlib import Path

    from daemon import service, service_start

    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    loaded: list[str] = []

    def slow_detector(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # `systemctl stop` during the load
        time.sleep(0.5)
        loaded.append("detector")
        return object()

    monkeypatch.setattr("daemon.engine_choice.load_detector", slow_detector)
    monkeypatch.setattr(service_start, "resolve_model", lambda config: Path("facenet.onnx"))
    monkeypatch.setattr(
        "daemon.engine_choice.load_facenet", lambda *a, **k: loaded.append("facenet")
    )
    monkeypatch.setattr(daemon, "_warm_up", lambda *a: loaded.append("warm-up"))
    kept = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGHUP)}
    try:
        daemon._install_signals()
        stopped = pytest.raises(service_start.StoppedWhileStarting)
        with caplog.at_level("INFO", logger="daemon.service"), stopped:
            daemon.load_engines()
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)
    assert loaded == ["detector"]
    lines = [r.getMessage() for r in caplog.records]
    said = [line for line in lines if "during the load of" in line]
    assert said == [
        f"SIGTERM during the load of the detector (MTCNN in {daemon.config.engines.mtcnn_dir}): "
        "facewatch stops once it ends (the load cannot be cut short)"
    ], lines


def _tensorrt_first_start(monkeypatch, stop_after: int | None = None) -> tuple:
    """A daemon with the tensorrt backend at its first start, each of the detector's three
    plans built (as the loader asks ``on_build`` before each: minutes); a stop asked during
    the build number ``stop_after``. (the daemon, what it told systemd, the plans begun)"""
    from daemon import service, service_start

    config = {"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": {"model": None}}
    daemon = service.Service(parse_config({**config, "engines": {"backend": "tensorrt"}}))
    told: list[str] = []
    begun: list[str] = []

    def load_detector(mtcnn_dir: Path, trt_plans: object, **kwargs: object) -> object:
        for net in ("pnet", "rnet", "onet"):
            trt_plans.on_build(Path(mtcnn_dir) / f"{net}.onnx")  # type: ignore[attr-defined]
            begun.append(net)
            if len(begun) == stop_after:
                daemon._stop.set()  # (what SIGTERM's handler does)
        return object()

    monkeypatch.setattr(service_start, "sd_notify", told.append)
    monkeypatch.setattr("daemon.engine_choice.load_detector", load_detector)
    monkeypatch.setattr(daemon, "_warm_up", lambda *a: begun.append("warm-up"))
    return daemon, told, begun


def test_a_tensorrt_build_at_start_extends_systemds_start_timeout_by_30_minutes(
    monkeypatch,
) -> None:
    """Each plan built at the first start extends systemd's start timeout by 30 minutes
    (EXTEND_TIMEOUT_USEC is in microseconds: in another unit systemd would kill the daemon
    during every build, restart it, and the plan would never be built) and says which."""
    daemon, told, begun = _tensorrt_first_start(monkeypatch)
    daemon.load_engines()
    assert begun == ["pnet", "rnet", "onet", "warm-up"]
    assert told == [
        line
        for net in ("pnet", "rnet", "onet")
        for line in (
            "EXTEND_TIMEOUT_USEC=1800000000",
            f"STATUS=building the TensorRT plan for {net}.onnx",
        )
    ]


def test_a_stop_asked_during_a_plan_build_begins_no_next_one(monkeypatch) -> None:
    """`systemctl stop` while the first of the detector's three plans is built: the start
    ends when that build does, without beginning the next (each is minutes: past the unit's
    TimeoutStopSec, a SIGKILL)."""
    from daemon import service_start

    daemon, told, begun = _tensorrt_first_start(monkeypatch, stop_after=1)
    with pytest.raises(service_start.StoppedWhileStarting):
        daemon.load_engines()
    assert begun == ["pnet"]
    assert len(told) == 2


def test_a_stop_asked_while_facenet_loads_begins_no_warm_up(monkeypatch) -> None:
    """`systemctl stop` during FaceNet's load (its TensorRT build, minutes): the start ends
    when the load does, without the engines' warm-up."""
    from daemon import service, service_start

    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    begun: list[str] = []

    def load_facenet(*args: object, **kwargs: object) -> object:
        daemon._stop.set()  # (what SIGTERM's handler does)
        return SimpleNamespace(model_id="facenet", runs_as="fp32 on onnxruntime")

    monkeypatch.setattr("daemon.engine_choice.load_detector", lambda *a, **k: object())
    monkeypatch.setattr(service_start, "resolve_model", lambda config: Path("facenet.onnx"))
    monkeypatch.setattr("daemon.engine_choice.load_facenet", load_facenet)
    monkeypatch.setattr(daemon, "_warm_up", lambda *a: begun.append("warm-up"))
    with pytest.raises(service_start.StoppedWhileStarting):
        daemon.load_engines()
    assert begun == []


def test_a_ctrl_c_during_the_engines_load_says_it_interrupts_it(monkeypatch, caplog) -> None:
    """Ctrl-C at a shell during the load said 'facewatch stops once it ends (the load cannot
    be cut short)', then the start ended at once (exit status 130): it says that it is
    interrupted."""
    import signal
    from pathlib import Path

    from daemon import service, service_start

    daemon = service.Service(parse_config({"cameras": [{"name": "door", "url": "x.mp4"}]}))
    loaded: list[str] = []

    def slow_detector(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the load
        time.sleep(0.5)
        loaded.append("detector")
        return object()

    monkeypatch.setattr("daemon.engine_choice.load_detector", slow_detector)
    monkeypatch.setattr(service_start, "resolve_model", lambda config: Path("facenet.onnx"))
    monkeypatch.setattr(
        "daemon.engine_choice.load_facenet", lambda *a, **k: loaded.append("facenet")
    )
    kept = signal.signal(signal.SIGINT, signal.default_int_handler)  # (Python's own)
    try:
        with caplog.at_level("INFO", logger="daemon.service"), pytest.raises(KeyboardInterrupt):
            daemon.load_engines()
    finally:
        signal.signal(signal.SIGINT, kept)
    assert loaded == []
    said = [r.getMessage() for r in caplog.records if "during the load of" in r.getMessage()]
    assert said == [
        f"SIGINT during the load of the detector (MTCNN in {daemon.config.engines.mtcnn_dir}): "
        "facewatch is interrupted as soon as the step under way returns (a TensorRT build: "
        "when it ends)"
    ]


def test_the_start_and_each_gallery_reload_say_what_runs_and_the_threshold_in_use(
    monkeypatch, tmp_path, caplog
) -> None:
    """After an upgrade or a `gallery calibrate` the journal could not tell which code, engines
    and match threshold ran: the start said the number of cameras and the node, a reload the
    number of people. The start names the version, cameras, detector and FaceNet with their
    backends and the threshold with where it comes from, and the cameras that have their
    own (a night camera's stricter one was said nowhere); a reload its threshold."""
    from pathlib import Path

    from daemon import build_version, service, service_start

    gallery = tmp_path / "gallery.sqlite"
    with Gallery.create(gallery, "facenet-x@sha256:0123", 8, 0.154) as made:
        made.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
        made.set_threshold("ann", 0.1)

    def started(threshold: float | None, yard: float | None = None) -> str:
        recognition = {"gallery": str(gallery), "precision": "fp32", "threshold": threshold}
        cameras = [
            {"name": "door", "url": "x.mp4"},
            {"name": "yard", "url": "y.mp4", "recognition": {"threshold": yard}},
        ]
        daemon = service.Service(parse_config({"cameras": cameras, "recognition": recognition}))
        facenet = SimpleNamespace(model_id="facenet-x@sha256:0123", runs_as="fp32 on onnxruntime")
        monkeypatch.setattr("daemon.engine_choice.load_detector", lambda *a, **k: object())
        monkeypatch.setattr(service_start, "resolve_model", lambda config: Path("facenet.onnx"))
        monkeypatch.setattr("daemon.engine_choice.load_facenet", lambda *a, **k: facenet)
        monkeypatch.setattr(daemon, "_warm_up", lambda *a: None)
        daemon.load_engines()
        assert daemon._enrolled(facenet) == ["ann"]  # type: ignore[arg-type]
        return daemon._summary(["door", "yard"])

    assert started(None) == (
        f"facewatch {build_version()} running: 2 camera(s) (door, yard), node facewatch; "
        "detector MTCNN on openvino, FaceNet facenet-x@sha256:0123 fp32 on onnxruntime; "
        "threshold 0.154 (the gallery's), 1 with their own"
    )
    assert started(0.2).endswith("; threshold 0.200 (recognition.threshold), 1 with their own")
    assert started(None, yard=0.1).endswith(
        "; threshold 0.154 (the gallery's), 1 with their own; cameras' own: yard 0.100"
    )

    config = parse_config(
        {"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": {"gallery": str(gallery)}}
    )
    engines = _OneFace()
    engines.model_id = "facenet-x@sha256:0123"  # type: ignore[misc]
    with caplog.at_level("INFO", logger="daemon.scheduler"):
        Pipeline(config, engines, engines, EventSinks()).reload_gallery()  # type: ignore[arg-type]
    assert f"gallery {gallery}: 1 person, threshold 0.154 (the gallery's), 1 with their own" in [
        r.getMessage() for r in caplog.records
    ]
    night = {"name": "night", "url": "n.mp4", "recognition": {"threshold": 0.05}}
    cameras = [{"name": "door", "url": "x.mp4"}, night]
    config = parse_config({"cameras": cameras, "recognition": {"gallery": str(gallery)}})
    caplog.clear()
    with caplog.at_level("INFO", logger="daemon.scheduler"):
        Pipeline(config, engines, engines, EventSinks()).reload_gallery()  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("gallery")] == [
        f"gallery {gallery}: 1 person, threshold 0.154 (the gallery's), 1 with their own; "
        "cameras' own: night 0.050"
    ]


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ("UPDATE embeddings SET vector = x'0000803f' WHERE id = 2", "bob's face 1 (of 1): 4 bytes, 32 expected"),
        ("UPDATE meta SET value = 'nan' WHERE key = 'threshold'", "the default threshold nan outside (0, 4]"),
        ("UPDATE identities SET threshold = 'abc' WHERE name = 'bob'", "bob's threshold 'abc' is not a number"),
    ],
)  # fmt: skip
def test_a_damaged_gallery_stops_the_start_naming_what_is_wrong(tmp_path, sql, said) -> None:
    """A gallery damaged past its meta (a blob cut short, a NaN default threshold) passed the
    start: the daemon ran, READY, '2 enrolled', and named nobody (the first full read, at
    the scheduler's start, failed and left no gallery), or crashed at every restart. It is a
    config error now, exit status 2, as a gallery damaged in its meta was."""
    from daemon import service

    path = tmp_path / "gallery.sqlite"
    _gallery_of_ann_and_bob(path, "facenet-x@sha256:0123")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(sql)
    recognition = {"gallery": str(path), "model": None}
    daemon = service.Service(
        parse_config({"cameras": [{"name": "door", "url": "x.mp4"}], "recognition": recognition})
    )
    facenet = SimpleNamespace(model_id="facenet-x@sha256:0123")
    with pytest.raises(ConfigError) as refused:
        daemon._enrolled(facenet)  # type: ignore[arg-type]
    assert str(refused.value).startswith(f"recognition.gallery: {path}: {said}"), refused.value
