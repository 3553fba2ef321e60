"""Video files as recordings: the time of each frame in the video (right on a variable
frame rate), times as a player shows them, why a file does not open, and an annotated copy
that plays at the input's speed."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from daemon.camera_open import ffmpeg_environment
from engines.image_files import HEIC_SUFFIXES, PHOTO_SUFFIXES, VIDEO_SUFFIXES
from engines.images import ImageError, as_bgr8, cv_path, read_image, shown


class VideoError(RuntimeError):
    """A video that cannot be opened or decoded."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a video, with where it stopped (``where``: "in clip.mp4 after frame 423
    (00:00:14.1)...")."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


# how the image formats OpenCV reads begin (JPEG, PNG, GIF, BMP, TIFF, WebP, JPEG 2000, PNM)
IMAGE_MAGIC: tuple[bytes, ...] = (
    *(b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*"),
    *(b"\x00\x00\x00\x0cjP", b"\xff\x4f\xff\x51"),
    *(f"P{k}".encode() for k in range(1, 8)),
)  # (WebP: RIFF....WEBP, apart: an AVI is RIFF too)


def image_or_video(path: Path) -> np.ndarray | None:
    """The photo at ``path``, or None where it is to be read as a video: by its suffix, or a
    file of neither a photo's nor a video's suffix (a recorder's .dav, none) that does not
    begin as an image does and that FFmpeg plays (a single frame is a photo: a TGA). A large
    recording is not read into memory to find it is no image. ImageError for a photo that
    cannot be read, VideoError for a file neither reads."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return None
    if suffix in PHOTO_SUFFIXES | HEIC_SUFFIXES or not _worth_trying_as_video(path):
        return read_image(str(path))
    with path.open("rb") as file:
        head = file.read(16)
    if head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return read_image(str(path))
    ffmpeg_environment()  # (before the first capture: FFmpeg's own messages name no file)
    capture = cv2.VideoCapture(cv_path(path))
    try:
        if capture.isOpened() and capture.grab():
            if 0 < capture.get(cv2.CAP_PROP_FRAME_COUNT) <= 1:
                ok, image = capture.retrieve()
                if ok and image is not None:
                    return as_bgr8(image)
            return None
    finally:
        capture.release()
    try:
        return read_image(str(path))
    except ImageError as exc:
        raise VideoError(f"{exc}; nor a video that FFmpeg can open") from None


def open_video(path: Path) -> cv2.VideoCapture:
    """``path`` opened by OpenCV's FFmpeg; VideoError saying why not where it can be told."""
    ffmpeg_environment()  # (before the first capture: FFmpeg's own messages name no file)
    capture = cv2.VideoCapture(cv_path(path))
    if not capture.isOpened():
        capture.release()  # (what FFmpeg opened before it gave up: now, not at a collection)
        raise VideoError(f"{path}: cannot open as a video{why_not_opened(path)}")
    return capture


def _worth_trying_as_video(path: Path) -> bool:
    """A readable file with data in it (an empty or unreadable one is said as such)."""
    try:
        return path.stat().st_size > 0 and os.access(path, os.R_OK)
    except OSError:
        return False


def native_fps(capture: cv2.VideoCapture, default: float = 25.0) -> float:
    """The frame rate the file's header gives, where it is a sane one (some give 0, or
    90000: their time base), else ``default``."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if 1 <= fps <= 240 else default


def header_frames(capture: cv2.VideoCapture) -> int | None:
    """The number of frames the file's header announces (FFmpeg's count, or its duration
    times its frame rate: an estimate), None where it gives none or junk."""
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if 0 < count < 1e9 else None


# the share of a video's announced frames and time under which it was cut short (a header's
# count is an estimate, seldom 10 % off), and under which most of it is lost: a failed file
CUT_SHORT = 0.9


@dataclass(frozen=True)
class CutShort:
    """A video whose frames ended, for the decoder, well before its header said (a damaged
    NVR export, a copy cut off): the frames decoded, those announced, and the time reached
    of the time announced. Only a warning: a clip cut from a recording without re-encoding
    counts, in its header, frames before its first keyframe that no player shows."""

    path: Path
    frames: int
    announced: int
    reached_s: float
    duration_s: float
    share: float

    @property
    def message(self) -> str:
        return (
            f"{self.path}: cut short: {self.frames} of the {self.announced} frames its header "
            f"announces could be decoded (up to {clock(self.reached_s)} of "
            f"{clock(self.duration_s)}); the rest cannot be read (truncated or corrupt? or "
            "a clip cut without re-encoding, whose header counts frames before its first "
            "keyframe)"
        )

    def record(self) -> dict[str, object]:
        """--json's record of a file cut short: ``{source, warning}``, with the frames
        decoded and announced."""
        return {
            "source": shown(self.path), "warning": shown(self.message),
            "frames_decoded": self.frames, "frames_announced": self.announced,
        }  # fmt: skip


def cut_short(
    path: Path, frames: int, last_s: float, announced: int | None, fps: float
) -> CutShort | None:
    """A video ``path`` whose ``frames`` decoded, the last at ``last_s``, fell short of the
    ``announced`` frames (at ``fps``) by both counts: frames and time, so that neither a
    header's count estimated from a variable frame rate's duration nor a pause in the
    recording is taken for damage. None when it did not (or the header announces nothing)."""
    if not announced:
        return None
    duration = announced / fps
    share = max(frames / announced, (last_s + 1 / fps) / duration)
    if share >= CUT_SHORT:
        return None
    return CutShort(path, frames, announced, last_s, duration, share)


def say_cut_short(short: CutShort | None, json_out: bool) -> None:
    """A video cut short said: a warning on stderr and, with --json, its ``{source,
    warning}`` record."""
    if short is None:
        return
    print(f"warning: {shown(short.message)}", file=sys.stderr)
    if json_out:
        print(json.dumps(short.record()), flush=True)


def frame_time(capture: cv2.VideoCapture, before: float, fps: float) -> float:
    """The time in the video, seconds, of the frame just read: its own timestamp (right on a
    variable frame rate, a motion-triggered recorder's pauses), or, where the file gives
    none that moves on, one frame period after the last."""
    at = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
    if at > before:
        return at
    return before + 1 / fps if before >= 0 else 0.0


@dataclass
class Seen:
    """When faces were seen in a video: the times of the first and last frame with any."""

    first: float = 0.0
    last: float = 0.0
    any: bool = False

    def add(self, at: float, faces: int) -> None:
        if faces:
            self.first = self.first if self.any else at
            self.last, self.any = at, True


def clock(seconds: float) -> str:
    """A time in a video, from its start, as hh:mm:ss.s (detect's and identify's lines)."""
    tenths = round(max(seconds, 0.0) * 10)
    return f"{tenths // 36000:02d}:{tenths // 600 % 60:02d}:{tenths % 600 / 10:04.1f}"


def output_fps(times: list[float], header_fps: float) -> float:
    """The annotated video's frame rate: the header's (over --every) where the first frames
    searched come at that rate, else the rate they come at (a variable-rate file's header
    gives an average over its pauses: 4 frames/s for a 30 frames/s recording)."""
    steps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
    if not steps:
        return header_fps
    measured = 1 / steps[len(steps) // 2]
    return header_fps if abs(measured / header_fps - 1) < 0.02 else measured


MAX_PAUSE_S = 2.0  # a pause in a recording longer than this is this long in the annotated video


class TimedWriter:
    """The annotated video, playing at the speed of the input: each frame from its time in
    the input until the next one's, at a constant rate (a frame is repeated through a pause,
    or left out where frames come faster than the rate); a pause is cut to MAX_PAUSE_S."""

    def __init__(self, out: Path, shape: tuple[int, ...], fps: float) -> None:
        self.writer = video_writer(out, shape, fps)
        self.fps = fps
        self.written = 0
        self.start: float | None = None
        self.last: np.ndarray | None = None

    def write(self, image: np.ndarray, at: float) -> None:
        if self.start is None:
            self.start = at
        slot = round((at - self.start) * self.fps)
        longest = max(round(MAX_PAUSE_S * self.fps), 1)
        if slot - self.written > longest:  # the pause cut: later frames come that much earlier
            self.start += (slot - self.written - longest) / self.fps
            slot = self.written + longest
        if slot < self.written:
            return
        while self.last is not None and self.written < slot:
            self.writer.write(self.last)
            self.written += 1
        self.writer.write(image)
        self.written += 1
        self.last = image

    def release(self) -> None:
        self.writer.release()


def why_not_opened(path: Path) -> str:
    """The likely cause where it can be told: an MP4/MOV (``ftyp`` first) without its index
    (the ``moov`` box, written last when a recording is finished)."""
    try:
        with path.open("rb") as file:
            boxes = list(_top_level_boxes(file))
    except OSError:
        return ""
    if boxes[:1] == [b"ftyp"] and b"moov" not in boxes:
        return (
            ": its index (the MP4 'moov' box) is missing: a recording cut off or copied before "
            "it was finished?"
        )
    return ""


def _top_level_boxes(file: BinaryIO) -> Iterator[bytes]:
    """The types of an ISO-BMFF (MP4, MOV, 3GP) file's top-level boxes, in order."""
    size = file.seek(0, os.SEEK_END)
    at = 0
    while at + 8 <= size:
        file.seek(at)
        header = file.read(16)
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if length == 1 and len(header) == 16:  # a 64-bit size follows the type
            length = int.from_bytes(header[8:16], "big")
        yield kind
        if length < 8:  # 0: to the end of the file (or not a box at all)
            return
        at += length


def video_writer(out: Path, shape: tuple[int, ...], fps: float) -> cv2.VideoWriter:
    fourcc = cv2.VideoWriter.fourcc(*"mp4v")
    writer = cv2.VideoWriter(cv_path(out), fourcc, fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise VideoError(f"{out}: cannot write the annotated video")
    return writer
