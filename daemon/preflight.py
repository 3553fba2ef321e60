"""What must hold before the daemon starts anything: the files and cameras its config names,
and which FaceNet model it runs. ``problems`` finds every one at once, each naming its key,
and creates nothing (``facewatch validate-config`` reports them too); ``check`` makes them
one ConfigError for ``run``, ``prepare_outputs`` creates the folders the outputs write to,
and ``outputs_claimed`` holds those one daemon alone may write while it runs. What weakens
the daemon without stopping it is daemon/preflight_warnings.py's.
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
from daemon.gallery import REENROLL, Gallery
from daemon.gallery_file import GalleryError
from engines.base import EngineError, ModelMetadata
from engines.facenet import (
    checked_metadata,
    embeddings_id,
    model_id_of,
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
