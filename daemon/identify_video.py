"""`facewatch identify VIDEO`: who was in a recording, and when.

The video's frames go through the daemon's own pipeline (``daemon.scheduler.Pipeline``: the
same detection, motion gate, tracking, recognition, votes and ``min_face_px``), as a camera
of ``--fps`` frames a second whose clock is the video's: each frame is timed by its own
timestamp (``CAP_PROP_POS_MSEC``), so a variable frame rate (an NVR's motion recording, with
gaps) gives the right times. Unlike a file camera of the daemon, every frame due at that rate
is processed, none dropped, as fast as the machine goes, and the file is read once. Each
track the daemon would announce is a visit: from its first frame to its last, named by the
track's vote (``left`` event), printed as it ends.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from daemon.camera_frames import Frame, FrameSchedule
from daemon.camera_open import ffmpeg_environment
from daemon.cameras import TURNS
from daemon.config import Config
from daemon.config_cameras import CameraConfig
from daemon.events import EventSinks
from daemon.gallery import Gallery
from daemon.low_light import Brightener
from daemon.motion import MotionDetector
from daemon.scheduler import Pipeline
from daemon.video_files import (
    CutShort,
    Interrupted,
    VideoError,
    clock,
    cut_short,
    frame_time,
    header_frames,
    native_fps,
    open_video,
    say_cut_short,
)
from engines.facenet import FaceNet
from engines.mtcnn import MTCNN

CAMERA = "video"  # the camera the pipeline sees (in metrics and logs) without --camera
DEFAULT_FPS = 5.0  # as a camera's default (cameras[].fps)
VISIT_KEYS = (
    "source, track, identity, start_s, end_s, start, end, confidence, distance, named, until"
)
VISIT_SCHEMA = (  # (argparse help: a percent sign doubled)
    "--json on a video: one object per visit ({"
    + VISIT_KEYS
    + "}): start_s / end_s the video's time in seconds of the visit's first and last frame "
    "(start / end the same as hh:mm:ss.s), identity null for unknown or undecided, "
    "confidence the share of the track's recent votes for it (0 and distance null: "
    "undecided, the face too small to recognise or its votes split), named every name "
    "the visit was given, until 'left', 'end' (in view at the video's end) or 'interrupted'; "
    "then, for a video cut short (under 90 %% of the frames its header announces decoded), "
    "{source, warning, frames_decoded, frames_announced}"
)


@dataclass
class Visit:
    """One track of the daemon in a recording: who, and from when to when (video time)."""

    source: str
    track: int
    identity: str | None
    start_s: float
    end_s: float
    confidence: float
    distance: float | None
    named: list[str] = field(default_factory=list)
    until: str = "left"

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["start"], record["end"] = clock(self.start_s), clock(self.end_s)
        return {key.strip(): record[key.strip()] for key in VISIT_KEYS.split(",")}

    @property
    def undecided(self) -> bool:
        """No vote decided who it was (the face too small or turned to recognise, or votes
        split)."""
        return self.identity is None and self.distance is None and self.confidence == 0

    @property
    def who(self) -> str:
        return self.identity or ("undecided" if self.undecided else "unknown")

    def line(self) -> str:
        """The visit as one line of identify's text output."""
        if self.identity is not None:
            who = f"{self.identity} (confidence {self.confidence:.2f}"
            who += f", distance {self.distance:.3f})" if self.distance is not None else ")"
        elif self.undecided:
            who = "undecided (too small or turned to recognise, or its votes split)"
        else:
            who = f"unknown (confidence {self.confidence:.2f}"
            who += f", nearest at {self.distance:.3f})" if self.distance is not None else ")"
        others = [name for name in self.named if name != self.identity]
        if others:
            who += f", named {', '.join(others)} before"
        until = {"end": ", in view at the end", "interrupted": ", in view when stopped"}
        return f"  {clock(self.start_s)} to {clock(self.end_s)}  {who}{until.get(self.until, '')}"


@dataclass
class Progress:
    """How far a video was read: frames decoded, the time of the last one, and the visits."""

    frames: int = 0
    time_s: float = 0.0
    searched: int = 0
    last_search_s: float = 0.0  # the time of the last frame searched
    visits: list[Visit] = field(default_factory=list)


class VisitSink(EventSinks):
    """The pipeline's events kept in memory: each track's visit is handed to ``on_visit``
    at its ``left`` (the names its events gave it, kept meanwhile). A track ended by the
    stop at the end (or Ctrl-C) was in view then if its face was in the last frame searched;
    otherwise it had left, less than ``lost_after_s`` before."""

    def __init__(self, source: str, progress: Progress, on_visit: Callable[[Visit], None]) -> None:
        super().__init__()
        self.source, self.progress, self.on_visit = source, progress, on_visit
        self.until_stopped = "end"  # what a track in view at the stop means: the end, Ctrl-C
        self._named: dict[int, list[str]] = {}

    def emit(self, event: dict[str, Any], snapshot: bytes | None = None) -> None:
        track, identity = event["track_id"], event["identity"]
        named = self._named.setdefault(track, [])
        if identity is not None and identity not in named:
            named.append(identity)
        if event["type"] != "left":
            return
        in_view = event["frame_ts"] >= round(self.progress.last_search_s, 3)
        until = self.until_stopped if event["reason"] == "stopped" and in_view else "left"
        visit = Visit(
            self.source, track, identity, event["first_seen_ts"], event["frame_ts"],
            event["confidence"], event["distance"], self._named.pop(track), until,
        )  # fmt: skip
        self.on_visit(visit)


def video_config(
    base: Config | None, path: Path, fps: float | None, camera_name: str | None = None
) -> Config:
    """The daemon's settings (its --config's, else the defaults) with one camera: the video,
    at ``fps`` (None: the camera's). With ``camera_name``, the video is that camera's
    recording, read with its settings (``rotate``, its ``detection`` and ``recognition``);
    ValueError when ``base`` has no camera of that name."""
    url = CAMERA + path.suffix
    if camera_name is None:
        camera = CameraConfig(name=CAMERA, url=url, fps=fps or DEFAULT_FPS)
    else:
        own = camera_named(base, camera_name)
        camera = own.model_copy(update={"url": url, "fps": fps or own.fps, "enabled": True})
    if base is None:
        return Config(cameras=[camera])
    return base.model_copy(update={"cameras": [camera]})


def camera_named(config: Config | None, name: str) -> CameraConfig:
    """The camera ``name`` of ``config``, or ValueError naming the cameras it has."""
    if config is None:
        raise ValueError(f"--camera {name}: give --config, the daemon's config that names it")
    for camera in config.cameras:
        if camera.name == name:
            return camera
    names = ", ".join(c.name for c in config.cameras)
    raise ValueError(f"--camera {name}: no camera of that name in --config (its cameras: {names})")


def frames_of(capture: cv2.VideoCapture, config: Config, progress: Progress) -> Iterator[Frame]:
    """The frames due at the camera's fps, timed by their timestamps in the video, each
    marked as the daemon's camera reader marks it (whether it moved: the motion gate)."""
    camera = config.cameras[0]
    schedule = FrameSchedule(camera.fps)
    motion = MotionDetector.gate(config.motion(camera), camera.fps)
    turn = TURNS.get(camera.rotate)
    brighten = Brightener(camera.name, camera.brighten_dark)
    fps = native_fps(capture)
    while capture.grab():
        now = frame_time(capture, progress.time_s if progress.frames else -1.0, fps)
        progress.frames, progress.time_s = progress.frames + 1, now
        if not schedule.keeps(now):
            continue
        ok, image = capture.retrieve()
        if not ok or image is None:
            return
        if turn is not None:  # as the camera's reader turns it, before all else
            image = cv2.rotate(image, turn)
        image = brighten(image)
        moved = motion.moved(image) if motion is not None else True
        yield Frame(camera.name, progress.frames - 1, now, image, moved)


def identify_video(
    path: Path,
    config: Config,
    detector: MTCNN,
    facenet: FaceNet,
    gallery: Gallery,
    json_out: bool,
    show_progress: bool,
) -> Progress:
    """The visits in the video at ``path``, printed as each ends, then a summary line."""
    ffmpeg_environment()  # FFmpeg's own messages off (a damaged file's: said by us)
    capture = open_video(path)
    total, fps = header_frames(capture), native_fps(capture)
    if not json_out:
        tqdm.write(
            f"{path}: visits, each as it ends (from when to when in the video):", file=sys.stdout
        )
    progress = Progress()
    sink = VisitSink(str(path), progress, _visit_printer(progress, json_out))
    pipeline = Pipeline(config, _daemons_detector(detector, config), facenet, sink, gallery=gallery)
    batching = config.batching  # a batch holds at most queue_frames frames of a camera
    size = min(batching.max_batch, batching.queue_frames)
    started = time.monotonic()
    bar = tqdm(
        total=total, desc=path.name, unit="frame", disable=not show_progress,
        file=sys.stderr, leave=False,
    )  # fmt: skip
    try:
        _run(pipeline, frames_of(capture, config, progress), size, progress, bar)
    except KeyboardInterrupt:
        sink.until_stopped = "interrupted"
        pipeline.expire(progress.time_s, stopping=True)
        of = f" of {total}" if total else ""
        where = f"{path} at {clock(progress.time_s)} (frame {progress.frames}{of})"
        raise Interrupted(where) from None
    finally:
        bar.close()
        capture.release()
    if progress.frames == 0:
        raise VideoError(f"{path}: no frame could be decoded")
    short = cut_short(path, progress.frames, progress.time_s, total, fps)
    seconds = time.monotonic() - started
    _summary(path, progress, config.cameras[0].fps, seconds, json_out, short)
    say_cut_short(short, json_out)
    return progress


def _visit_printer(progress: Progress, json_out: bool) -> Callable[[Visit], None]:
    """What prints each visit as it ends (a JSON object, or a line above the progress
    bar), keeping it in ``progress`` for the summary."""

    def print_visit(visit: Visit) -> None:
        progress.visits.append(visit)
        if json_out:
            print(json.dumps(visit.to_json()), flush=True)
        else:
            tqdm.write(visit.line(), file=sys.stdout)

    return print_visit


def _daemons_detector(detector: MTCNN, config: Config) -> MTCNN:
    """``detector`` with the daemon's detector settings (``config.detection``)."""
    detection = config.detection
    return detector.with_config(
        min_face_size=detection.min_face_size,
        thresholds=detection.thresholds,
        scale_factor=detection.scale_factor,
    )


def _run(
    pipeline: Pipeline, frames: Iterator[Frame], size: int, progress: Progress, bar: tqdm[Any]
) -> None:
    """Feed the pipeline batches of up to ``size`` frames, as its scheduler does when a
    camera's frames wait, its tracks expired on the video's clock before each batch; at the
    end, those gone and then those still in view (``left``, reason stopped). A frame after a
    gap (a recording paused: a variable frame rate) starts a batch, so that the tracks are
    expired at its time as the scheduler would have (a pause past the daemon's stall grace
    and ``tracking.lost_after_s``, about 12 s, ends the visits; a shorter one keeps them)."""
    batch: list[Frame] = []
    period = 1.0 / pipeline.config.cameras[0].fps
    for frame in frames:
        if batch and frame.ts - batch[-1].ts > 1.5 * period:
            _process(pipeline, batch, progress, bar)
            batch = []
        batch.append(frame)
        if len(batch) == size:
            _process(pipeline, batch, progress, bar)
            batch = []
    if batch:
        _process(pipeline, batch, progress, bar)
    bar.update(progress.frames - bar.n)
    pipeline.expire(progress.time_s)
    pipeline.expire(progress.time_s, stopping=True)


def _process(pipeline: Pipeline, batch: list[Frame], progress: Progress, bar: tqdm[Any]) -> None:
    pipeline.expire(batch[0].ts)  # (the scheduler's, every 0.25 s: here at each batch)
    pipeline.process(batch)
    progress.searched += len(batch)
    progress.last_search_s = batch[-1].ts
    bar.update(batch[-1].seq + 1 - bar.n)


def _summary(
    path: Path,
    progress: Progress,
    fps: float,
    seconds: float,
    json_out: bool,
    short: CutShort | None = None,
) -> None:
    """One line: how many visits, of whom, in how much video (cut short: how much of what
    its header announces), and how fast it went."""
    counts = Counter(v.who for v in progress.visits)
    who = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    found = f"{len(progress.visits)} visit(s) ({who})" if progress.visits else "no one"
    rate = progress.time_s / seconds if seconds > 0 else 0.0
    line = (
        f"{path}: {found} in {clock(progress.time_s)} of video ({progress.searched} frames "
        f"taken at {fps:g} fps of {progress.frames}; {seconds:.1f} s, {rate:.1f}x real time)"
    )
    if short is not None:
        line += f"; cut short: {short.frames} of the {short.announced} frames decoded"
    tqdm.write(line, file=sys.stderr if json_out else sys.stdout)
