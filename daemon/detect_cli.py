"""`facewatch detect PATH...`: faces and landmarks in images, videos and folders."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from daemon.camera_open import STUCK_FILE, StuckPicture, ffmpeg_environment
from daemon.cli_args import number
from daemon.journal import StdoutError, print_error
from daemon.low_light import brightened
from daemon.video_files import (
    CutShort,
    Interrupted,
    Seen,
    TimedWriter,
    VideoError,
    clock,
    cut_short,
    frame_time,
    header_frames,
    image_or_video,
    native_fps,
    open_video,
    output_fps,
    say_cut_short,
)
from engines import BACKENDS, EngineError
from engines.base import bounds_text
from engines.base import progress_wanted as on_terminal
from engines.detectors import load_detector
from engines.image_files import PHOTO_SUFFIXES, VIDEO_SUFFIXES, folder_files
from engines.images import ImageError, shown, write_image
from engines.loader import THREAD_BOUNDS, cpu_threads, default_models_dir
from engines.mtcnn import (
    MIN_FACE_SIZE_BOUNDS,
    MTCNN,
    SCALE_FACTOR_BOUNDS,
    THRESHOLD_BOUNDS,
    FrameDetections,
    MTCNNConfig,
)

logger = logging.getLogger(__name__)


def progress_wanted(args: argparse.Namespace) -> bool:
    """Progress bars: on a terminal, unless --no-progress (``engines.base.progress_wanted``)."""
    return on_terminal(args.no_progress)


def input_name(argument: Path, path: Path) -> Path:
    """How ``path``, found from the command-line ``argument``, is named below an output
    folder: a file argument by its name, a folder argument's files by the folder's name and
    their path inside it (``people/ada/1.jpg`` from the argument ``people``)."""
    if path == argument:
        return Path(path.name)
    return Path(argument.resolve().name) / path.relative_to(argument)


class Outputs:
    """Where ``--annotate DIR`` writes: the inputs' tree below DIR, each file as
    ``input_name`` says with the output's suffix. A name written earlier in the same run is
    not overwritten (NAME-1, NAME-2...); a file of an earlier run is replaced."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._taken: set[Path] = set()

    def path_for(self, name: Path, suffix: str) -> Path:
        wanted = self.folder / name.with_suffix(suffix)
        out, k = wanted, 1
        while out in self._taken:
            out = wanted.with_name(f"{wanted.stem}-{k}{suffix}")
            k += 1
        self._taken.add(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out


def register(commands: argparse._SubParsersAction) -> None:
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
    _add_detector_options(p)
    p.add_argument(
        "--border",
        choices=("pad", "clip"),
        default="pad",
        help="faces at the image edge: zero-pad their crops (default, as MTCNN's authors) "
        "or clip them (as facenet-pytorch)",
    )
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


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


SCORES_SHOWN = 20  # an image's line lists at most this many scores (--json: all)


@dataclass
class Summary:
    files: int = 0
    frames: int = 0
    faces: int = 0
    errors: list[str] = field(default_factory=list)


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


def _detect_one(
    detector: MTCNN,
    path: Path,
    name: Path,
    args: argparse.Namespace,
    summary: Summary,
    outputs: Outputs | None,
) -> None:
    """One file searched and counted, or its failure said (and, with --json, recorded): a
    video by its name, else a photo; a file of neither a photo's nor a video's name (a
    recorder's .dav) is tried as a video before it is called unreadable."""

    def out(suffix: str) -> Path | None:
        return outputs.path_for(name, suffix) if outputs else None

    try:
        image = image_or_video(path)
        if image is None:
            _detect_video(detector, path, args, summary, out(".mp4"))
        else:
            _detect_image(detector, path, image, args, summary, out(".jpg"))
        summary.files += 1
    except (BrokenPipeError, StdoutError):  # the reader gone, a full disk: no file's fault
        raise
    except (ImageError, VideoError, OSError) as exc:
        summary.errors.append(str(exc))
        tqdm.write(f"error: {exc}", file=sys.stderr)
        if args.json:  # consumers of the JSON lines see the failure too
            print(json.dumps({"source": shown(path), "error": shown(str(exc))}))


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


def _emit(
    args: argparse.Namespace,
    source: Path,
    frame: int | None,
    hw: tuple[int, ...],
    found: FrameDetections,
    at: float | None = None,
) -> None:
    if args.json:
        record = {
            "source": shown(source),
            "frame": frame,
            "time_s": None if at is None else round(at, 3),
            "image_hw": list(hw[:2]),
            "faces": found.to_json(),
        }
        print(json.dumps(record), flush=False)
    elif frame is None:
        scores = ", ".join(f"{s:.3f}" for s in found.score[:SCORES_SHOWN])
        if len(found) > SCORES_SHOWN:
            scores += f", ... {len(found) - SCORES_SHOWN} more"
        plural = "s" if len(found) != 1 else ""
        tqdm.write(
            f"{source}: {len(found)} face{plural}" + (f" (scores {scores})" if scores else ""),
            file=sys.stdout,
        )


def _detect_image(
    detector: MTCNN,
    path: Path,
    image: np.ndarray,
    args: argparse.Namespace,
    summary: Summary,
    out: Path | None,
) -> None:
    image = brightened(image)  # a dark photo as the daemon's camera reader does
    found = detector.detect([image])[0]
    summary.frames += 1
    summary.faces += len(found)
    _emit(args, path, None, image.shape, found)
    if out is not None:
        write_image(out, draw(image, found))


@dataclass
class _VideoRun:
    """How far the search of the video at ``path`` has got: the frames decoded and the last
    one's time, the frames searched, the faces found and when, the frames searched compared
    with the one before (a stuck picture), the annotated video (to ``out``) and the last
    frame searched (its number and time: where a Ctrl-C leaves the outputs)."""

    path: Path
    out: Path | None
    fps: float  # the header's
    decoded: int = 0
    clock_s: float = -1.0
    searched: int = 0
    faces: int = 0
    seen: Seen = field(default_factory=Seen)
    stuck: StuckPicture = field(default_factory=StuckPicture)
    writer: TimedWriter | None = None
    last_searched: tuple[int, float] | None = None


def _detect_video(
    detector: MTCNN, path: Path, args: argparse.Namespace, summary: Summary, out: Path | None
) -> None:
    """The video's frames (every --every-th) searched in batches of --batch, each printed
    (--json) and drawn (--annotate); then its line, or a VideoError when it has no picture
    of its own."""
    capture = open_video(path)
    total = header_frames(capture)
    run = _VideoRun(path, out, native_fps(capture))
    bar = tqdm(
        total=total,
        desc=path.name,
        unit="frame",
        disable=not progress_wanted(args),
        file=sys.stderr,
        leave=False,
    )
    try:
        for batch in _batches(_frames_to_search(capture, run, args.every), args.batch):
            _search(detector, batch, run, args, summary)
            bar.update(batch[-1][0] + 1 - bar.n)
    except KeyboardInterrupt:
        raise _interrupted(run, args.json) from None
    finally:
        bar.close()
        capture.release()
        if run.writer is not None:
            run.writer.release()
    no_picture = _no_picture(run)
    if no_picture is not None:
        summary.faces -= run.faces  # (those found, if any, are in a stale buffer's picture)
        raise VideoError(no_picture)
    short = cut_short(path, run.decoded, run.clock_s, total, run.fps)
    if not args.json:
        _say_video(run, args.every, total, short)
    say_cut_short(short, args.json)


_Sampled = tuple[int, float, np.ndarray]  # a frame to search: its number, time and picture


def _frames_to_search(capture: cv2.VideoCapture, run: _VideoRun, every: int) -> Iterator[_Sampled]:
    """Every ``every``-th frame, brightened as the daemon's camera reader does; each frame
    decoded is counted and timed in ``run``, each taken compared with the one before."""
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        run.clock_s = frame_time(capture, run.clock_s, run.fps)
        seq, run.decoded = run.decoded, run.decoded + 1
        if seq % every == 0:
            run.stuck.see(frame, 0.0)
            yield seq, run.clock_s, brightened(frame)


def _batches(frames: Iterator[_Sampled], size: int) -> Iterator[list[_Sampled]]:
    """``frames`` in lists of ``size`` (the last one shorter), each as soon as it is full."""
    batch: list[_Sampled] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _search(
    detector: MTCNN,
    batch: list[_Sampled],
    run: _VideoRun,
    args: argparse.Namespace,
    summary: Summary,
) -> None:
    """One detector call for ``batch``; each frame's faces counted, printed and drawn."""
    found_in = detector.detect([image for _, _, image in batch])
    for (seq, at, image), found in zip(batch, found_in, strict=True):
        summary.frames += 1
        summary.faces += len(found)
        run.searched += 1
        run.faces += len(found)
        run.seen.add(at, len(found))
        _emit(args, run.path, seq, image.shape, found, at)
        run.last_searched = seq, at
        if run.out is not None:
            if run.writer is None:  # at the rate the first batch's frames come at
                rate = output_fps([t for _, t, _ in batch], run.fps / args.every)
                run.writer = TimedWriter(run.out, image.shape, rate)
            run.writer.write(draw(image, found), at)


def _interrupted(run: _VideoRun, json_out: bool) -> Interrupted:
    """Ctrl-C: where it stopped, and that the outputs written end there."""
    if run.last_searched is None:
        where = f"in {run.path} before its first frame was searched"
    else:
        seq, at = run.last_searched
        where = f"in {run.path} after frame {seq} ({clock(at)})"
    written = run.writer is not None  # (none before its first frame: an older one stays as it was)
    kept = [w for w, on in (("JSON records", json_out), ("annotated video", written)) if on]
    if not kept:
        return Interrupted(where)
    ends = "ends" if kept == ["annotated video"] else "end"  # the records end there
    return Interrupted(f"{where}: its {' and '.join(kept)} {ends} there")


def _no_picture(run: _VideoRun) -> str | None:
    """Why the video showed no picture of its own: no frame decoded, or every frame
    searched black or the same (a stale buffer's: an interlaced video); None when it did."""
    if run.decoded == 0:
        return f"{run.path}: no frame could be decoded"
    if run.stuck.count and run.stuck.count >= run.searched - 1:  # (the first is compared with none)
        how = "all black" if run.stuck.black else "the same picture"
        return f"{run.path}: its {run.searched} frames searched decode {how}: {STUCK_FILE}"
    return None


def _say_video(run: _VideoRun, every: int, total: int | None, short: CutShort | None) -> None:
    """The video's line: its frames (how many searched), its length, its faces and when."""
    searched = f" ({run.searched} searched: every {every})" if every > 1 else ""
    when = f" seen {clock(run.seen.first)}-{clock(run.seen.last)}" if run.faces else ""
    cut = f" (cut short: {run.decoded} of {total} frames decoded)" if short else ""
    tqdm.write(
        f"{run.path}: {run.decoded} frames{searched}, {clock(0)}-{clock(run.clock_s)}, "
        f"{run.faces} faces{when}{cut}",
        file=sys.stdout,
    )


def draw(image: np.ndarray, found: FrameDetections) -> np.ndarray:
    """A copy of ``image`` with each face's box, score and landmarks drawn."""
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 600))
    for box, score, points in zip(found.bbox_xyxy, found.score, found.landmarks, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        put_label(out, f"{score:.2f}", x1, y1, (0, 255, 0), thickness)
        for x, y in points:
            cv2.circle(out, (round(float(x)), round(float(y))), thickness + 1, (0, 0, 255), -1)
    return out


def put_label(
    image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], thickness: int
) -> None:
    """``text`` just above the point (x, y) (a box's corner), moved inside the image where it
    would leave it (a face at the edge keeps a readable label)."""
    scale = 0.4 * thickness
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = min(max(x, 0), max(image.shape[1] - width, 0))
    y = max(y - 4, height + 2)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness)


def _print_summary(summary: Summary, seconds: float) -> None:
    rate = summary.frames / seconds if seconds > 0 else 0.0
    print(
        f"summary: {summary.files} file(s), {summary.frames} image(s)/frame(s), {summary.faces} face(s), "
        f"{len(summary.errors)} error(s), {seconds:.1f} s ({rate:.1f} frames/s)",
        file=sys.stderr,
    )
    for error in summary.errors:
        print(f"  failed: {error}", file=sys.stderr)
