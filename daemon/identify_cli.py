"""`facewatch identify`: who is in a photo, or in a video and when (daemon/identify_video.py).

`identify` and `enroll` (daemon/enroll_cli.py) detect faces with MTCNN, cut them the way
the FaceNet model's sidecar says, and embed them (daemon/cli_models.py: ``load_models``, with
the options of ``add_model_options``; with --config on the daemon's engines,
``daemon.engine_choice``); the `gallery` commands (daemon/gallery_cli.py) manage what is
enrolled. Exit status: 0 done, 1 an image refused (the reason is printed), 2 a model or
argument problem.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from daemon import gallery_calibrate, gallery_choice, gallery_cli
from daemon.cli_args import number
from daemon.cli_models import Models, add_model_options, load_models, photo_files
from daemon.cli_output import Outputs, input_name, progress_wanted, put_label
from daemon.config import Config, ConfigError
from daemon.config_cameras import CameraConfig
from daemon.gallery import Gallery
from daemon.gallery_file import GalleryError
from daemon.gallery_match import Match
from daemon.identify_video import (
    DEFAULT_FPS,
    VISIT_SCHEMA,
    camera_named,
    identify_video,
    video_config,
)
from daemon.journal import StdoutError, print_error
from daemon.low_light import brightened
from daemon.video_files import Interrupted, VideoError, image_or_video
from engines import EngineError
from engines.image_files import PHOTO_SUFFIXES, VIDEO_SUFFIXES
from engines.images import ImageError, shown, write_image
from engines.mtcnn import FrameDetections

# a named face's next nearest person this close behind is shown with it (squared L2): on the
# shipped model one person's photos lie about 0.08 apart, so 0.02 is within one person's spread
RUNNER_UP_MARGIN = 0.02


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``identify`` and the ``gallery`` commands (``enroll``: daemon/enroll_cli.py)."""
    _add_identify(commands)
    gallery_cli.register(commands)


def _add_identify(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "identify",
        help="name every face in photos (or say unknown), and who was in a video, and when",
        description="Photos: detect every face and match it against the gallery: the "
        "identity, or unknown, with the squared L2 distance to the nearest enrolled face. A "
        f"named face whose next nearest person lies within {RUNNER_UP_MARGIN} of it shows "
        "that person too ('alice (distance 0.103; bob close behind at 0.111)'; in --json "
        "runner_up and runner_up_distance, else null): the two may be one person enrolled "
        "twice, or look-alikes. Videos (a recording, an NVR export, a phone's clip): the "
        "visits in it, each with who (or unknown), from when to when in the video's own "
        "time (hh:mm:ss.s from its start, by each frame's timestamp: right for a variable "
        "frame rate too) and the vote's confidence, found as the daemon finds them (its "
        "detection, tracking and votes; --config: its settings), on every frame at --fps, "
        "none dropped, as fast as the machine goes; then a summary line. Ctrl-C keeps what "
        "was printed and says where it stopped (exit status 130). A gallery of 120 faces or "
        "more still at the threshold a new gallery starts at is warned of first, with the "
        "share of strangers it would name (`gallery calibrate` chooses a threshold).",
    )
    p.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="photos, videos, or folders of them",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per photo on stdout ({source, error} for a file that failed); "
        + VISIT_SCHEMA,
    )
    _add_camera_options(p)
    p.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write photos with names drawn, in the inputs' folder tree (as detect does; "
        "videos are not drawn)",
    )
    add_model_options(p)
    p.set_defaults(func=run_identify)


def _add_camera_options(p: argparse.ArgumentParser) -> None:
    """--fps and --camera: a video searched, or a photo taken, as a camera of --config."""
    p.add_argument(
        "--fps",
        type=number(float, gt=0, le=60),
        help=f"videos: frames a second searched, by the video's time, as a camera's fps "
        f"(default {DEFAULT_FPS:g}, or --camera's fps); above the video's own rate (60 for "
        "any), every frame",
    )
    p.add_argument(
        "--camera",
        metavar="NAME",
        help="taken by this camera of --config: a video is searched with its rotate, fps, "
        "brighten_dark, detection (min_face_size, ignore regions, motion) and recognition "
        "(threshold, min_face_px), as the daemon searches its stream; a photo (a snapshot, "
        "an archived face) with its brighten_dark and threshold only, taken as it is "
        "(upright, every face in it matched; a named face smaller than the min_face_px of "
        "--config or --camera is noted: the daemon would not name it)",
    )


# -- identify -----------------------------------------------------------------------------


def run_identify(args: argparse.Namespace) -> int:
    try:
        config = gallery_choice.daemon_config(args)
        camera = None if args.camera is None else camera_named(config, args.camera)
        min_face = _min_face(config, camera)
        models = load_models(args)
    except (EngineError, ConfigError, ValueError) as exc:
        print_error(str(exc))
        return 2
    gallery = None
    try:
        gallery = Gallery.open(gallery_choice.gallery_path(args), models.facenet.model_id)
        recognition = gallery_choice.daemon_recognition(args)
        if recognition is not None:  # match as the daemon does
            gallery.threshold_override = recognition.threshold
        _warn_uncalibrated(gallery, models, camera)
    except GalleryError as exc:
        if gallery is not None:
            gallery.close()
        print_error(str(exc))
        return 1
    with gallery:  # (closed on every way out)
        if args.annotate:
            try:
                args.annotate.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                print_error(f"--annotate {args.annotate}: {exc.strerror}")
                return 2
        suffixes = PHOTO_SUFFIXES | VIDEO_SUFFIXES
        paths = [
            (file, input_name(path, file))
            for path in args.images
            for file in photo_files(path, suffixes)
        ]
        return _identify_files(models, gallery, paths, args, camera, min_face)


@dataclass(frozen=True)
class MinFace:
    """The daemon's smallest face recognised, ``px``, and the key that sets it (``said``)."""

    px: float
    said: str


def _min_face(config: Config | None, camera: CameraConfig | None) -> MinFace | None:
    """--config's ``recognition.min_face_px`` (--camera's own where it has one), which a
    photo is not held to (every face in it is matched), to note the named faces the daemon
    would not match; None without --config (no daemon to compare with) or at 0."""
    if config is None:
        return None
    px = config.recognition.min_face_px if camera is None else config.min_face_px(camera)
    whose = (
        f"camera {camera.name}'s "
        if camera is not None and camera.recognition.min_face_px is not None
        else ""
    )
    return MinFace(px, f"{whose}recognition.min_face_px") if px > 0 else None


def _warn_uncalibrated(gallery: Gallery, models: Models, camera: CameraConfig | None) -> None:
    """Once, on stderr: the gallery is large and still at its starting threshold, where it
    names many strangers (``gallery_calibrate.uncalibrated``), unless --config's or --camera's
    threshold replaces it (identify named strangers as enrolled people without a word)."""
    if gallery.threshold_override is not None:
        return
    if camera is not None and camera.recognition.threshold is not None:
        return
    warning = gallery_calibrate.uncalibrated(gallery, models.facenet.meta.extra)
    if warning is not None:
        print(f"warning: gallery {gallery.path}: {warning.text}", file=sys.stderr)


def _identify_files(
    models: Models,
    gallery: Gallery,
    paths: list[tuple[Path, Path]],
    args: argparse.Namespace,
    camera: CameraConfig | None = None,
    min_face: MinFace | None = None,
) -> int:
    """Each photo's faces, each video's visits; the exit status (130 at Ctrl-C in a video,
    after saying where it stopped and which files were not done). ``camera``: --camera's;
    ``min_face``: the daemon's, noted on a photo's named faces under it."""
    outputs = Outputs(args.annotate) if args.annotate else None
    errors = 0
    show = progress_wanted(args) and len(paths) > 1
    for k, (path, name) in enumerate(
        tqdm(paths, desc="identify", disable=not show, file=sys.stderr)
    ):
        try:
            if path.is_dir():
                raise ImageError(f"{path}: folder holds no images or videos")
            image = image_or_video(path)
            if image is None:
                _identify_video(models, gallery, path, args)
            else:
                out = outputs.path_for(name, ".jpg") if outputs else None
                _identify_one(models, gallery, path, image, args, out, camera, min_face)
        except Interrupted as stop:
            left = [str(p) for p, _ in paths[k + 1 :]]
            undone = f"; not done: {', '.join(left)}" if left else ""
            print(f"interrupted: {shown(stop.where)}{undone}", file=sys.stderr)
            return 130
        except (BrokenPipeError, StdoutError):  # the reader gone, a full disk: no file's fault
            raise
        except (ImageError, VideoError, OSError, ValueError) as exc:
            errors += 1
            reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            tqdm.write(f"error: {reason}", file=sys.stderr)
            if args.json:
                print(json.dumps({"source": str(path), "error": reason}))
    if errors:
        print(f"{errors} of {len(paths)} file(s) failed", file=sys.stderr)
    return 1 if errors else 0


def _identify_video(models: Models, gallery: Gallery, path: Path, args: argparse.Namespace) -> None:
    """The visits in a video, by the daemon's pipeline with its --config's settings."""
    config = video_config(gallery_choice.daemon_config(args), path, args.fps, args.camera)
    identify_video(
        path, config, models.detector, models.facenet, gallery, args.json, progress_wanted(args)
    )


def _identify_one(
    models: Models,
    gallery: Gallery,
    path: Path,
    image: np.ndarray,
    args: argparse.Namespace,
    out: Path | None,
    camera: CameraConfig | None = None,
    min_face: MinFace | None = None,
) -> None:
    """The photo's faces, each named or unknown; with ``camera`` (--camera) as that camera's
    frames are: brightened only where its ``brighten_dark`` is on, matched at its threshold
    (the night camera a user checks with a snapshot: it was matched at the default). Every
    face is matched; a named one smaller than ``min_face`` says the daemon would not match
    it (a frame of a camera named a 25-px face the daemon never named; text only, the JSON
    has its box)."""
    if camera is None or camera.brighten_dark:
        image = brightened(image)  # a dark photo as the daemon's camera reader does
    found = models.detector.detect([image])[0]
    embeddings = models.facenet.embed_faces(image, found)
    defaults = None if camera is None else [camera.recognition.threshold] * len(embeddings)
    matches = gallery.match(embeddings, runner_up=True, defaults=defaults)
    faces = [
        {**face, **_match_json(match)} for face, match in zip(found.to_json(), matches, strict=True)
    ]
    if args.json:
        print(json.dumps({"source": str(path), "image_hw": list(image.shape[:2]), "faces": faces}))
    else:
        tqdm.write(f"{path}: {len(faces)} face(s)", file=sys.stdout)
        for k, face in enumerate(faces, 1):
            box = " ".join(f"{v:.0f}" for v in face["bbox_xyxy"])
            said = _describe(face) + _too_small(face, min_face)
            tqdm.write(f"  face {k} [{box}]: {said}", file=sys.stdout)
    if out is not None:
        write_image(out, draw(image, found, matches))


def _match_json(match: Match) -> dict[str, object]:
    finite = np.isfinite(match.distance)
    close = (
        match.identity is not None
        and match.runner_up is not None
        and match.runner_up_distance - match.distance <= RUNNER_UP_MARGIN
    )
    return {
        "identity": match.identity,
        "distance": round(match.distance, 4) if finite else None,
        "confidence": round(match.confidence, 4),
        "nearest": match.nearest,
        "runner_up": match.runner_up if close else None,
        "runner_up_distance": round(match.runner_up_distance, 4) if close else None,
    }


def _too_small(face: dict[str, Any], min_face: MinFace | None) -> str:
    """A named face's note that the daemon would not match it: its box's shorter side, as
    the daemon measures it, under ``min_face`` ('' otherwise): to a tenth of a pixel, as
    a box printed rounded can look as wide as the limit (a 29.6 px side under 30 said '29 px'),
    rounded down (29.97 is not '30.0 px: smaller than 30')."""
    if min_face is None or face["identity"] is None:
        return ""
    x1, y1, x2, y2 = face["bbox_xyxy"]
    side = min(x2 - x1, y2 - y1)
    if side >= min_face.px:
        return ""
    shown = math.floor(side * 10) / 10
    return (
        f" ({shown:.1f} px: smaller than {min_face.said} {min_face.px:g}, the daemon would "
        "not name it)"
    )


def _describe(face: dict[str, Any]) -> str:
    if face["identity"] is not None and face["runner_up"] is not None:
        return (
            f"{face['identity']} (distance {face['distance']:.3f}; {face['runner_up']} close "
            f"behind at {face['runner_up_distance']:.3f})"
        )
    if face["identity"] is not None:
        return f"{face['identity']} (distance {face['distance']:.3f})"
    if face["nearest"] is None:
        return "unknown (the gallery is empty)"
    return f"unknown (nearest {face['nearest']}, distance {face['distance']:.3f})"


def draw(image: np.ndarray, found: FrameDetections, matches: list[Match]) -> np.ndarray:
    """A copy of ``image`` with each face boxed and labelled (green: known, red: unknown)."""
    out: np.ndarray = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 600))
    for box, match in zip(found.bbox_xyxy, matches, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        colour = (0, 200, 0) if match.identity else (0, 0, 255)
        label = f"{match.identity or 'unknown'} {match.distance:.2f}"
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        put_label(out, label, x1, y1, colour, thickness)
    return out
