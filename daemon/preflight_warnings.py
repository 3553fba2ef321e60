"""What weakens the daemon's security or its events without stopping it (``warnings``: the
broker's password in the clear, files of personal data others may read, a gallery at a
threshold that names strangers, or damaged, votes that announce brief false detections,
cameras over TLS unchecked, which they are only when the environment says so): ``run``
logs them at its start (``log_warnings``), ``validate-config`` prints them. What stops the
daemon is daemon/preflight.py's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from daemon.camera_open import capture_options
from daemon.config import Config
from daemon.gallery import Gallery, shown_threshold
from daemon.gallery_calibrate import uncalibrated
from daemon.gallery_file import GalleryError
from daemon.peer_exchange import TLS_SCHEMES
from daemon.preflight import _model_file
from engines.base import EngineError, ModelMetadata
from engines.facenet import outdated_threshold


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
    options = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", capture_options())
    for k, camera in enumerate(config.cameras):
        tls = camera.url.split("://")[0].lower() in TLS_SCHEMES
        if camera.enabled and tls and "tls_verify;1" not in options.split("|"):
            found.append(
                f"cameras[{k}] ({camera.name}).url: the camera's TLS certificate is not checked "
                "(OPENCV_FFMPEG_CAPTURE_OPTIONS in the environment replaces facewatch's options "
                "and has no tls_verify;1), so its password could go to an impostor on the "
                "network"
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
