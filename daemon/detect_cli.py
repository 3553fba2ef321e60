"""`facewatch detect PATH...`: faces and landmarks in images, videos and folders."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from daemon.camera_open import ffmpeg_environment
from daemon.cli_args import number
from daemon.cli_output import Outputs, input_name, progress_wanted
from daemon.detect_search import Summary, _detect_one
from daemon.journal import print_error
from daemon.video_files import Interrupted
from engines import BACKENDS, EngineError
from engines.base import bounds_text
from engines.detectors import load_detector
from engines.image_files import PHOTO_SUFFIXES, VIDEO_SUFFIXES, folder_files
from engines.images import shown
from engines.loader import THREAD_BOUNDS, cpu_threads, default_models_dir
from engines.mtcnn import (
    MIN_FACE_SIZE_BOUNDS,
    SCALE_FACTOR_BOUNDS,
    THRESHOLD_BOUNDS,
    MTCNNConfig,
)

logger = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "detect",
        help="find faces and 5 landmarks in images, videos and folders",
        description="Detect faces with MTCNN. Prints one line per image and per video (with "
        "--json one object per image or video frame); a bad file is reported and skipped, and "
        "the exit status is 1 if any file failed.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="images, videos or folders")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image / frame on stdout (a frame's with its time_s in the "
        "video); {source, error} for a file that failed (a path missing, a folder without "
        "images), and {source, warning, frames_decoded, "
        "frames_announced} for a video cut short (under 90 %% of the frames its header "
        "announces decoded)",
    )
    p.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write images (and videos, playing at their speed, a pause over 2 s cut to 2 s) "
        "with boxes drawn, in the inputs' folder tree (a folder argument's files under its "
        "name); files of an earlier run are replaced",
    )
    _add_engine_options(p)
    _add_detector_options(p)
    p.add_argument(
        "--border",
        choices=("pad", "clip"),
        default="pad",
        help="faces at the image edge: zero-pad their crops (default, as MTCNN's authors) "
        "or clip them (as facenet-pytorch)",
    )
    _add_video_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """--models, --backend and --threads: the detector's models and what runs them."""
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        help="folder with pnet/rnet/onet .onnx (default: $FACEWATCH_MODELS/mtcnn, else the "
        "shipped models/mtcnn)",
    )
    p.add_argument(
        "--backend", choices=BACKENDS, default="openvino", help="engine backend (default: openvino)"
    )
    p.add_argument(
        "--threads",
        type=number(int, **THREAD_BOUNDS),
        default=0,
        help="CPU threads (0: all the cores it may use); each runs its own copy of the networks on part of "
        "the work (frames, pyramid levels, candidates)",
    )


def _add_detector_options(p: argparse.ArgumentParser) -> None:
    """--min-face-size, --thresholds and --scale-factor: the detector's defaults and bounds."""
    default = MTCNNConfig()
    p.add_argument(
        "--min-face-size",
        type=number(float, **MIN_FACE_SIZE_BOUNDS),
        default=default.min_face_size,
        help=f"smallest face to find, pixels (default {default.min_face_size:g})",
    )
    p.add_argument(
        "--thresholds",
        type=number(float, **THRESHOLD_BOUNDS),
        nargs=3,
        default=default.thresholds,
        metavar=("P", "R", "O"),
        help="P-Net, R-Net, O-Net score thresholds, each "
        f"{bounds_text(THRESHOLD_BOUNDS)} (default {' '.join(map(str, default.thresholds))})",
    )
    p.add_argument(
        "--scale-factor",
        type=number(float, **SCALE_FACTOR_BOUNDS),
        default=default.scale_factor,
        help=f"image pyramid step, {bounds_text(SCALE_FACTOR_BOUNDS)} "
        f"(default {default.scale_factor:g})",
    )


def _add_video_options(p: argparse.ArgumentParser) -> None:
    """--batch and --every: how a video's frames are searched."""
    p.add_argument(
        "--batch",
        type=number(int, ge=1),
        default=8,
        help="video frames per detector call (default 8)",
    )
    p.add_argument(
        "--every",
        type=number(int, ge=1),
        default=1,
        metavar="N",
        help="videos: detect on every Nth frame",
    )


def run(args: argparse.Namespace) -> int:
    if args.annotate is not None and args.annotate.exists() and not args.annotate.is_dir():
        print_error(f"--annotate {args.annotate}: not a folder")
        return 2
    models = args.models or default_models_dir() / "mtcnn"
    try:
        detector = load_detector(
            models,
            backend=args.backend,
            threads=cpu_threads(args.threads),
            min_face_size=args.min_face_size,
            thresholds=tuple(args.thresholds),
            scale_factor=args.scale_factor,
            border=args.border,
        )
    except (EngineError, ValueError) as exc:
        print_error(str(exc))
        return 2
    outputs = None
    if args.annotate:
        try:
            args.annotate.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = exc.strerror or exc
            print_error(f"--annotate {args.annotate}: cannot create it: {why}")
            return 2
        outputs = Outputs(args.annotate)
    ffmpeg_environment()  # FFmpeg's own messages ("moov atom not found") name no file: off
    summary = Summary()
    started = time.monotonic()
    files = list(_expand(args.paths, summary, args.json))
    show_bar = progress_wanted(args) and len(files) > 1
    path = None
    try:
        for path, name in tqdm(
            files, desc="files", unit="file", disable=not show_bar, file=sys.stderr
        ):
            _detect_one(detector, path, name, args, summary, outputs)
    except KeyboardInterrupt as stop:
        where = stop.where if isinstance(stop, Interrupted) else f"at {path}"
        print(f"interrupted {where}; {summary.files} of {len(files)} file(s) done", file=sys.stderr)
        _print_summary(summary, time.monotonic() - started)
        return 130
    _print_summary(summary, time.monotonic() - started)
    return 1 if summary.errors else 0


def _expand(
    paths: list[Path], summary: Summary, json_out: bool = False
) -> Iterator[tuple[Path, Path]]:
    """(file, its ``input_name``): files as given; folders become their images and videos,
    sorted, as every command walks a folder (``engines.image_files``). A path missing or a
    folder without any is a failed file, said (--json: in its ``{source, error}`` record)."""
    for path in paths:
        if path.is_dir():
            walk = folder_files(path, PHOTO_SUFFIXES | VIDEO_SUFFIXES)
            note = walk.note(path)
            if note:
                print(f"note: {shown(note)}", file=sys.stderr)
            if not walk.files:
                why = (
                    f"{path}: folder holds no images or videos (a folder's files are taken by "
                    f"their extension: {', '.join(sorted(PHOTO_SUFFIXES | VIDEO_SUFFIXES))}; "
                    "name a file to read it whatever its name)"
                )
                _failed(path, why, summary, json_out)
            yield from ((p, input_name(path, p)) for p in walk.files)
        elif path.exists():
            yield path, input_name(path, path)
        else:
            _failed(path, f"{path}: no such file or folder", summary, json_out)


def _failed(path: Path, why: str, summary: Summary, json_out: bool) -> None:
    """A path that gave no file: counted, said, and with --json recorded as a file that
    failed to read is."""
    summary.errors.append(why)
    print_error(why)
    if json_out:
        print(json.dumps({"source": shown(path), "error": shown(why)}))


def _print_summary(summary: Summary, seconds: float) -> None:
    rate = summary.frames / seconds if seconds > 0 else 0.0
    print(
        f"summary: {summary.files} file(s), {summary.frames} image(s)/frame(s), {summary.faces} face(s), "
        f"{len(summary.errors)} error(s), {seconds:.1f} s ({rate:.1f} frames/s)",
        file=sys.stderr,
    )
    for error in summary.errors:
        print(f"  failed: {error}", file=sys.stderr)
