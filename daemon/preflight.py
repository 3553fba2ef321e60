"""What must hold before the daemon starts anything: the files and cameras its config names,
and which FaceNet model it runs. Each failure is a ConfigError naming the key."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from daemon.archive import FaceArchive
from daemon.cameras import check_file_source
from daemon.config import Config, ConfigError
from engines.loader import default_facenet

logger = logging.getLogger(__name__)


def resolve_model(config: Config) -> Path | None:
    """The FaceNet model file to use, or None for detection only."""
    model = config.recognition.model
    if model is None:
        return None
    if model == "auto":
        default = default_facenet()
        if default.is_file():
            return default
        logger.warning(
            "no FaceNet model at %s: running detection and tracking only (events carry "
            "identity null); set recognition.model to a model file to recognise people "
            "(`facewatch train export` makes one from facenet-pytorch's published weights)",
            default,
        )
        return None
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"recognition.model: {path}: FaceNet model file not found")
    return path


def check_cameras(config: Config) -> None:
    """Local video files must exist and decode (streams may come up later)."""
    for k, camera in enumerate(config.cameras):
        if not camera.enabled:
            continue
        try:
            check_file_source(camera.url)
        except OSError as exc:
            raise ConfigError(f"cameras[{k}] ({camera.name}).url: {exc}") from None


def check_files(config: Config) -> None:
    """Files the config names that must be there before anything starts: MTCNN's models, the
    TLS files, the JSON-lines file's folder; a ConfigError names the key."""
    for name in ("pnet", "rnet", "onet"):
        model = Path(config.engines.mtcnn_dir) / f"{name}.onnx"
        if not model.is_file():
            raise ConfigError(f"engines.mtcnn_dir: {model}: not found (MTCNN's {name})")
    tls = config.mqtt.tls
    if config.mqtt.enabled and tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, key)
            if value is not None and not os.access(value, os.R_OK):
                why = "cannot be read" if Path(value).is_file() else "not found"
                raise ConfigError(f"mqtt.tls.{key}: {value}: {why}")
    if config.events.jsonl_file:
        out = Path(config.events.jsonl_file)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.open("a").close()
        except OSError as exc:
            raise ConfigError(f"events.jsonl_file: {out}: {exc.strerror or exc}") from None
    if config.archive.dir:
        folder = Path(config.archive.dir)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"archive.dir: {folder}: a file, not a folder")
        try:
            FaceArchive.prepare(config.archive.dir)
        except OSError as exc:
            raise ConfigError(
                f"archive.dir: {folder}: cannot create or write the folder: {exc.strerror or exc}"
            ) from None
