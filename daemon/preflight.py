"""What must hold before the daemon starts anything: the files and cameras its config names,
and which FaceNet model it runs. ``problems`` finds every one at once, each naming its key,
and creates nothing (``facewatch validate-config`` reports them too); ``check`` makes them
one ConfigError for ``run``, ``prepare_outputs`` creates the folders the outputs write to,
and ``outputs_claimed`` holds those one daemon alone may write while it runs.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon import mqtt_tls
from daemon.archive import FaceArchive
from daemon.archive_files import LOCK_FILE, PRUNE_WAIT_S
from daemon.camera_open import check_file_source
from daemon.claims import claim
from daemon.config import Config, ConfigError
from daemon.events import open_jsonl
from daemon.gallery import REENROLL, Gallery, GalleryError, shown_threshold
from daemon.gallery_calibrate import uncalibrated
from engines.base import EngineError, ModelMetadata
from engines.facenet import (
    checked_metadata,
    embeddings_id,
    model_id_of,
    outdated_threshold,
    split_embeddings_id,
)
from engines.loader import default_facenet

logger = logging.getLogger(__name__)


def _model_path(config: Config) -> Path | None:
    """The FaceNet model file ``recognition.model`` names (``auto``: the shipped one's place),
    which may not be there; None for detection only."""
    model = config.recognition.model
    return None if model is None else default_facenet() if model == "auto" else Path(model)


def resolve_model(config: Config) -> Path | None:
    """The FaceNet model file to use, or None for detection only."""
    path = _model_path(config)
    if path is None:
        return None
    if config.recognition.model == "auto":
        if path.is_file():
            return path
        logger.warning(
            "no FaceNet model at %s: running detection and tracking only (events carry "
            "identity null); set recognition.model to a model file to recognise people "
            "(`facewatch train export` makes one from facenet-pytorch's published weights)",
            path,
        )
        return None
    if not path.is_file():
        raise ConfigError(f"recognition.model: {path}: FaceNet model file not found")
    return path


def recognition_summary(config: Config) -> str:
    """Who the daemon would name, in a few words: the model it runs, or why none."""
    path = _model_path(config)
    if path is None:
        return "detection only (recognition.model: null)"
    if not path.is_file():  # (`auto`: only; a named one missing is a problem)
        return f"detection only: no FaceNet model at {path} (recognition.model: auto)"
    return f"recognition with {path}"


def problems(config: Config) -> list[str]:
    """Everything in the files and cameras ``config`` names that would stop the daemon at
    its start, each as "key: what is wrong"; nothing is created."""
    return [
        *_backend_problems(config),
        *_camera_problems(config),
        *_mtcnn_problems(config),
        *_model_problems(config),
        *_gallery_problems(config),
        *_tls_problems(config),
        *_output_problems(config),
    ]


def file_problems(config: Config) -> list[str]:
    """The problems of ``problems`` that a look at the files finds: the MTCNN models, the
    FaceNet model and its sidecar, the TLS files, the outputs' folders; no camera is
    opened, no gallery read, no SDK imported (a SIGHUP runs them in the running daemon)."""
    return [
        *_mtcnn_problems(config),
        *_model_file_problems(config),
        *_tls_problems(config),
        *_output_problems(config),
    ]


class Serious(str):
    """A warning ``run`` logs as an error: the daemon runs, but names the wrong people often
    (a large gallery at its starting threshold names most strangers)."""


def log_warnings(config: Config, log: logging.Logger) -> None:
    """``warnings``, as ``run`` logs them at its start (to ``log``): a Serious one at ERROR."""
    for warning in warnings(config):
        log.log(logging.ERROR if isinstance(warning, Serious) else logging.WARNING, warning)


def warnings(config: Config) -> list[str]:
    """What weakens the daemon's security, or its events, without stopping it, each as
    "key: what and why" (``run`` logs them, ``validate-config`` prints them)."""
    found = []
    mqtt = config.mqtt
    if mqtt.enabled and mqtt.tls is not None and mqtt.tls.insecure:
        found.append(
            "mqtt.tls.insecure: true: the broker's certificate is not checked against its "
            "host name, so any certificate a trusted CA signed passes: whoever holds one can "
            "pose as the broker and receive the password and the events (for tests only)"
        )
    if mqtt.enabled and mqtt.tls is None and mqtt.password and not _loopback(mqtt.host):
        found.append(
            f"mqtt.password: sent in the clear to {mqtt.host}, with every event: the "
            "broker is reached over plain TCP (set mqtt.tls, port 8883)"
        )
    personal: list[tuple[str, str | None]] = [
        ("recognition.gallery", config.recognition.gallery),
        ("events.jsonl_file", config.events.jsonl_file),
    ]
    for key, where in personal:
        mode = _mode(where)
        if mode is not None and mode & 0o077:
            found.append(
                f"{key}: {where} is readable by others (mode {mode:04o}): it holds personal "
                f"data; chmod 600 {where}"
            )
    found += _threshold_warnings(config)
    found += _damage_warnings(config)
    found += _confirm_warnings(config)
    for k, camera in enumerate(config.cameras):
        if camera.enabled and camera.url.split("://")[0].lower() in ("https", "rtsps"):
            found.append(
                f"cameras[{k}] ({camera.name}).url: the camera's TLS certificate is not checked "
                "(OpenCV's FFmpeg does not), so its password could go to an impostor on the "
                "network: keep cameras on a network of their own"
            )
    return found


def _confirm_warnings(config: Config) -> list[str]:
    """``tracking.confirm_frames`` below ``min_votes`` with recognition on: a named face
    waits for its votes all the same, and brief false detections are announced."""
    confirm, votes = config.tracking.confirm_frames, config.tracking.min_votes
    if config.recognition.model is None or confirm >= votes:
        return []
    return [
        f"tracking.confirm_frames: {confirm} is below tracking.min_votes ({votes}): a known "
        f"face is still announced only once its {votes} votes are in (one a frame: {votes} "
        f"frames), but a face seen in as few as {confirm} frame(s), most often a false "
        "detection, is announced as it leaves (confirmed with identity null, then left): a "
        "stranger who was never there. Set confirm_frames to min_votes or more; a lower "
        "min_votes names faces sooner, and strangers more often"
    ]


def _mode(path: str | None) -> int | None:
    """The permission bits of the file at ``path``, None when there is none."""
    try:
        return None if path is None else os.stat(path).st_mode & 0o777
    except OSError:
        return None


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host in ("::1", "[::1]")


def check(config: Config) -> None:
    """A ConfigError listing ``problems(config)``, when there are any."""
    _refuse(problems(config))


def check_files(config: Config) -> None:
    """A ConfigError listing ``file_problems(config)``, when there are any."""
    _refuse(file_problems(config))


def _refuse(found: list[str]) -> None:
    if len(found) == 1:
        raise ConfigError(found[0])
    if found:
        raise ConfigError(f"{len(found)} problems\n  " + "\n  ".join(found))


def _backend_problems(config: Config) -> list[str]:
    """The GPU backends' SDKs, which a CPU box lacks (the engines say what to install)."""
    backend = config.engines.backend
    try:
        if backend == "tensorrt":
            from engines.tensorrt import import_cudart, import_tensorrt

            import_tensorrt()
            import_cudart()
        elif backend == "torch":
            from engines.torch_backend import import_torch

            import_torch()
    except EngineError as exc:
        return [f"engines.backend: {backend}: {exc}"]
    return []


def _camera_problems(config: Config) -> list[str]:
    """Local video files must exist and decode (streams may come up later)."""
    found = []
    for k, camera in enumerate(config.cameras):
        if not camera.enabled:
            continue
        try:
            check_file_source(camera.url)
        except OSError as exc:
            found.append(f"cameras[{k}] ({camera.name}).url: {exc}")
    return found


def _mtcnn_problems(config: Config) -> list[str]:
    folder = Path(config.engines.mtcnn_dir)
    if not folder.is_dir():
        return [f"engines.mtcnn_dir: {folder}: no such folder (MTCNN's models)"]
    return [
        f"engines.mtcnn_dir: {folder / name}.onnx: not found (MTCNN's {name})"
        for name in ("pnet", "rnet", "onet")
        if not (folder / f"{name}.onnx").is_file()
    ]


def mtcnn_load_problems(config: Config) -> list[str]:
    """MTCNN's three models loaded as ``run`` loads them, each on its own (``validate-config``
    only: ``run`` loads them anyway): a file cut short or another stage's copied over it,
    named. A GPU backend's plans are built from these ONNX files: they are loaded on ONNX
    Runtime here (as a CPU backend's, on that backend)."""
    from engines.loader import CPU_BACKENDS
    from engines.mtcnn_stages import STAGES, load_stage, stage_sidecar

    if _mtcnn_problems(config):
        return []  # (missing: said already)
    backend = config.engines.backend
    backend = backend if backend in CPU_BACKENDS else "onnxruntime"
    found = []
    for name in STAGES:
        path = Path(config.engines.mtcnn_dir) / f"{name}.onnx"
        try:
            stage_sidecar(path, name)
            load_stage(path, name, backend, threads=1).close()
        except EngineError as exc:
            found.append(f"engines.mtcnn_dir: {exc}")
    return found


def _model_problems(config: Config) -> list[str]:
    path = _model_path(config)
    if path is not None and config.recognition.model == "auto" and not path.is_file():
        return _gallery_without_model(config, path)
    return _model_file_problems(config)


def _model_file_problems(config: Config) -> list[str]:
    """The FaceNet model ``recognition.model`` names, with its sidecar (``auto`` without
    one is detection only: ``_model_problems`` says when that would not do)."""
    path = _model_path(config)
    if path is None or (config.recognition.model == "auto" and not path.is_file()):
        return []
    try:
        checked_metadata(path)
    except EngineError as exc:  # as `run` would stop: a checkpoint, another model, no sidecar
        return [f"recognition.model: {exc}"]
    return []


def _gallery_without_model(config: Config, path: Path) -> list[str]:
    """``auto`` without a model runs detection only, which suits a box where nobody is
    enrolled; beside a gallery that holds people the model has gone missing (a reinstall,
    FACEWATCH_MODELS pointing elsewhere), and every event would carry identity null."""
    gallery = Path(config.recognition.gallery)
    if not gallery.is_file():
        return []
    try:
        with Gallery.open(gallery) as opened:
            people, model_id = len(opened.identities()), opened.model_id
    except GalleryError:
        return []  # (not read without a model: detection only, as before)
    if not people:
        return []
    return [
        f"recognition.model: auto: no FaceNet model at {path}, but the gallery {gallery} "
        f"holds {people} {'person' if people == 1 else 'people'}, enrolled with {split_embeddings_id(model_id)[0]!r}: restore "
        "the model this gallery was enrolled with (there, or set recognition.model to its "
        "file), or set recognition.model: null to run detection only"
    ]


def _model_file(config: Config) -> Path | None:
    """The FaceNet model the daemon would run, when there is one whose sidecar passes the
    checks ``run`` makes (``resolve_model``, quietly): the gallery is checked against it."""
    path = _model_path(config)
    if path is None or not path.is_file():
        return None
    try:
        checked_metadata(path)
    except EngineError:
        return None  # (a problem, said by _model_problems)
    return path


def _gallery_problems(config: Config) -> list[str]:
    """A gallery the daemon would refuse at its start: another model's, or made with (or
    without) flip, or unreadable. ``run`` exits 2 on it, which systemd does not retry, so
    validate-config must say it before the restart."""
    path, model = Path(config.recognition.gallery), _model_file(config)
    if model is None or not path.exists():
        return []
    try:
        model_id = model_id_of(ModelMetadata.load(model), model)
        with Gallery.open(path) as gallery:
            enrolled_with = split_embeddings_id(gallery.model_id)[0]
        if _name(enrolled_with) == _name(model_id) and enrolled_with != model_id:
            return [_changed_model(model, path, enrolled_with, model_id)]
        with Gallery.open(path, model_id=embeddings_id(model_id, config.recognition.flip)) as ours:
            ours.threshold_override = config.recognition.threshold
            ours.load()  # every face and threshold, as `run` reads them: damage is said here
    except (GalleryError, EngineError) as exc:
        return [f"recognition.gallery: {exc}"]
    return []


def _damage_warnings(config: Config) -> list[str]:
    """Damage in the gallery file that the daemon's reads do not meet (an index, a free
    page): it matches as before, but the next enroll or `gallery` change is refused."""
    path = Path(config.recognition.gallery)
    if _model_file(config) is None or not path.is_file():
        return []
    try:
        with Gallery.open(path) as gallery:
            found = gallery.damage()
    except GalleryError:
        return []  # (a problem, said by _gallery_problems)
    if not found:
        return []
    return [
        f"recognition.gallery: {path}: SQLite's check finds the file damaged "
        f"({'; '.join(found)}): the daemon matches with what it reads, but enrolling, "
        "removing or any change will be refused: export it (`facewatch gallery export "
        "FILE`), import that into a new gallery (`facewatch gallery import FILE --gallery "
        "NEW`) and set recognition.gallery to it"
    ]


def _name(model_id: str) -> str:
    """The sidecar's name in a model id (``NAME@sha256:HASH``)."""
    return model_id.partition("@sha256:")[0]


def _changed_model(model: Path, gallery: Path, enrolled_with: str, model_id: str) -> str:
    """The model file is not the one the gallery was enrolled with, though its sidecar names
    the same model: a file damaged (a copy cut short, a failing disk) reads the same as one
    replaced, and re-enrolling everyone would not mend a damaged file."""
    return (
        f"recognition.model: {model}: this file differs from the model the gallery {gallery} "
        f"was enrolled with (the gallery's {enrolled_with!r}, the file's {model_id!r}: by "
        "their sidecars, the same model): if you did not replace it, it is damaged (a copy "
        "cut short, a failing disk) or another version: reinstall the file the gallery was "
        f"enrolled with; if you replaced it on purpose, {REENROLL}"
    )


def _threshold_warnings(config: Config) -> list[str]:
    """A gallery still at the threshold galleries started at before facewatch started them
    at the model's, which names strangers far more often (``outdated_threshold``), or one
    grown large at its starting threshold (``gallery_calibrate.uncalibrated``: Serious where it
    would name more than a fifth of strangers). Read at the start only, not at a reload."""
    path, model = Path(config.recognition.gallery), _model_file(config)
    if model is None or config.recognition.threshold is not None or not path.is_file():
        return []
    enabled = [camera for camera in config.cameras if camera.enabled]
    if enabled and all(camera.recognition.threshold is not None for camera in enabled):
        return []  # (no camera matches at the gallery's threshold)
    try:
        extra = ModelMetadata.load(model).extra
        with Gallery.open(path) as gallery:
            threshold = gallery.threshold
            grown = uncalibrated(gallery, extra)
        better = outdated_threshold(extra, threshold)
    except (GalleryError, EngineError):
        return []  # (a problem, said by _gallery_problems)
    if better is None:
        if grown is None:
            return []
        line = f"recognition.gallery: {path}: {grown.text}"
        return [Serious(line) if grown.serious else line]
    return [
        f"recognition.gallery: its default threshold {shown_threshold(threshold)} is the "
        "model's LFW best-accuracy one, where galleries started before 2026-11-30: "
        f"against many enrolled photos it names strangers far more often than "
        f"{shown_threshold(better)}, where new galleries start now: unless you chose it, "
        f"`facewatch gallery threshold --default {shown_threshold(better)} --gallery {path}` "
        "(or `facewatch gallery calibrate`)"
    ]


def _tls_problems(config: Config) -> list[str]:
    """The TLS files loaded as ``run`` loads them, each on its own: there, readable, and
    what its key says (a PEM certificate; the private key of ``cert_file``)."""
    tls = config.mqtt.tls
    if not config.mqtt.enabled or tls is None:
        return []
    return mqtt_tls.file_problems(tls)


def _output_problems(config: Config) -> list[str]:
    """The file and folders the daemon writes: there and writable, or creatable."""
    wanted = [("events.jsonl_file", config.events.jsonl_file, False)]
    wanted.append(("archive.dir", config.archive.dir, True))
    if config.mqtt.enabled:
        wanted.append(("mqtt.spool_dir", config.mqtt.spool_dir, True))
    found = []
    for key, path, folder in wanted:
        why = _unwritable(Path(path), folder) if path else ""
        if why:
            found.append(f"{key}: {path}: {why}")
    return found


def _unwritable(path: Path, folder: bool) -> str:
    """Why ``path`` (a folder, or a file) cannot be written or created ('' when it can)."""
    if path.exists():
        if path.is_dir() != folder:
            return "a folder, not a file" if folder is False else "a file, not a folder"
        return "" if os.access(path, os.W_OK) else "not writable by this user"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable by this user"
    return ""


# what may pass by itself (a full disk, a failing one, another daemon that will stop): exit 1,
# and systemd starts it again
WAIT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EBUSY})


def output_error(what: str, exc: OSError) -> Exception:
    """An output that cannot be opened at start: an OSError (exit status 1, which systemd
    restarts) when it may pass by itself, a full or failing disk, a spool in use; a
    ConfigError (exit 2, which it does not) when someone must change something."""
    said = f"{what}: {exc.strerror or exc}"
    if exc.errno in WAIT_ERRNOS:
        until = "the other has stopped" if exc.errno == errno.EBUSY else "the disk can be written"
        return OSError(
            f"{said} (exit status 1: systemd starts facewatch again; it runs once {until})"
        )
    return ConfigError(said)


def prepare_outputs(config: Config) -> None:
    """Create the JSON-lines file's folder and the archive's (the error names the key)."""
    if config.events.jsonl_file:
        out = Path(config.events.jsonl_file)
        try:
            open_jsonl(out).close()
        except OSError as exc:
            raise output_error(f"events.jsonl_file: {out}", exc) from None
    if config.archive.dir:
        try:
            FaceArchive.prepare(config.archive.dir)
        except OSError as exc:
            where = f"archive.dir: {config.archive.dir}: cannot create or write the folder"
            raise output_error(where, exc) from None


@contextmanager
def outputs_claimed(config: Config) -> Iterator[None]:
    """``archive.dir`` held for this daemon while it runs: a second facewatch given the same
    folder would delete this one's visits by its own keep_days and max_mb. It is refused at
    start, exit status 1, naming the other's pid; an ``archive prune`` holding it for a
    moment is waited for (up to PRUNE_WAIT_S). Commands that only list or delete some
    visits (``archive list``, ``gallery remove --forget``) take no claim: they run beside it."""
    if not config.archive.dir:
        yield
        return
    folder = Path(config.archive.dir)
    try:
        lock = claim(folder / LOCK_FILE, "archive.dir", patience_s=PRUNE_WAIT_S)
    except OSError as exc:
        raise output_error(f"archive.dir: {folder}", exc) from None
    try:
        yield
    finally:
        os.close(lock)
