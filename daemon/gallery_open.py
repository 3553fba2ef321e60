"""The daemon's gallery file opened (checked against the model; none yet: every face is
unknown) and what a read of it says in the log (the threshold in use, who a reload brought
and took away): the service reads it at start, the pipeline (``daemon.scheduler``) at
start and whenever the file changes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from daemon.config import Config
from daemon.config_cameras import CameraConfig
from daemon.gallery import DEFAULT_LOCK_TIMEOUT_S, Gallery, shown_threshold
from daemon.gallery_file import GalleryError

logger = logging.getLogger(__name__)


def came_and_went(before: set[str], after: set[str], most: int = 10) -> str:
    """`` (+Ann, -Bob)``: who a reload brought and took away (a backup copied over the
    gallery brings back people forgotten since: the log shows it); empty when no one."""
    changes = [f"+{name}" for name in sorted(after - before)]
    changes += [f"-{name}" for name in sorted(before - after)]
    if not changes:
        return ""
    more = f" and {len(changes) - most} more" if len(changes) > most else ""
    return f" ({', '.join(changes[:most])}{more})"


def open_gallery(
    config: Config, model_id: str, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> Gallery | None:
    """The configured gallery, checked against the model; None (all faces unknown) when the
    file does not exist yet."""
    path = config.recognition.gallery
    try:
        gallery = Gallery.open(path, model_id=model_id, lock_timeout_s=lock_timeout_s)
    except GalleryError:
        if Path(path).exists():
            raise
        logger.warning(
            "no gallery at %s: every face is unknown until people are enrolled "
            "(facewatch enroll --config THIS_CONFIG --name NAME PHOTO...: the daemon reads it "
            "within seconds)",
            path,
        )
        return None
    gallery.threshold_override = config.recognition.threshold
    return gallery


def threshold_said(gallery: Gallery, cameras: Sequence[CameraConfig] = ()) -> str:
    """The match threshold in use and where it comes from (recognition.threshold, else the
    gallery's own, which `gallery calibrate` sets), how many people have their own, as
    ``gallery.load`` read it (GalleryError when it has not and cannot), and the enabled
    ``cameras`` that have their own (cameras[].recognition.threshold)."""
    if gallery.threshold_override is not None:
        said = f"threshold {shown_threshold(gallery.threshold_override)} (recognition.threshold)"
    else:
        said = f"threshold {shown_threshold(gallery.threshold)} (the gallery's)"
    own = gallery.with_own_threshold()
    said = f"{said}, {own} with their own" if own else said
    theirs = [
        f"{c.name} {shown_threshold(c.recognition.threshold)}"
        for c in cameras
        if c.enabled and c.recognition.threshold is not None
    ]
    return f"{said}; cameras' own: {', '.join(theirs)}" if theirs else said
