"""`facewatch detect`'s search of each file: a photo, or a video's frames in batches (every
``--every``-th, a stuck picture told apart, Ctrl-C's place said); what it prints of each and
draws, and the counts of the run (``Summary``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from daemon.camera_open import STUCK_FILE, StuckPicture
from daemon.cli_output import Outputs, draw, progress_wanted
from daemon.journal import StdoutError
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
from engines.images import ImageError, shown, write_image
from engines.mtcnn import MTCNN, FrameDetections

SCORES_SHOWN = 20  # an image's line lists at most this many scores (--json: all)


@dataclass
class Summary:
    files: int = 0
    frames: int = 0
    faces: int = 0
    errors: list[str] = field(default_factory=list)


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
