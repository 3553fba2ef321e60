"""The motion gate on quiet cameras: the real daemon with ``detection.motion`` on, then off,
on the same RTSP cameras, each looping the same "doorway" clip.

The clip (tests/clips.py ``doorway_clip``) is the demo clip scaled to 1280x720: its empty
frame held ``--still`` seconds with sensor noise (a scene where nobody is), then the whole
clip (people come in, 0-6 faces, cuts). Both runs measure over whole loops of it, after a
warm-up, with the test FaceNet and a one-person gallery as in bench_daemon.py. Reported per
run: CPU seconds per second, frames searched and skipped per camera and second, events and
``confirmed`` events (the faces found). Then the same frames of the clip go through the
pipeline (no daemon, no clock) with the gate on and off: the second into the loop of every
``confirmed``, to see whether the gate found each arrival when the ungated pipeline did.
Run from the repository root:

    .venv/bin/python bench/bench_motion.py --cameras 2 --still 20 --loops 2

Writes --out (by default bench/.cache/daemon_motion.json, git-ignored; the committed results
in bench/results/ are written only when --out names them) and prints a table. It measures;
it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_daemon import random_model_and_gallery, run  # noqa: E402  (its daemon run)
from script_support import CACHE, out_argument, stop_on_sigterm  # noqa: E402

from tests.clips import doorway_clip  # noqa: E402

DEFAULT_OUT = CACHE / "daemon_motion.json"  # not bench/results/: keeps the committed one


def doorway_720p(still_s: float) -> Path:
    """The doorway clip at 1280x720 in H.264 (what the RTSP server serves), made once."""
    out = CACHE / f"doorway_{still_s:g}s_720p.mp4"
    if out.is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = doorway_clip(Path(tmp) / "doorway.mp4", still_s, scale=2.0)
        pipeline = (
            f'filesrc location="{raw}" ! qtdemux ! avdec_mpeg4 ! videoconvert '
            "! x264enc speed-preset=medium key-int-max=30 bframes=0 ! h264parse ! mp4mux "
            f'! filesink location="{out}"'
        )
        subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], check=True)
    return out


def confirmations(clip: Path, fps: float, gate: bool) -> list[int]:
    """The clip's frames (at ``fps``, as a camera reader keeps them) through the pipeline
    with the gate on or off, twice round: the index in the clip of each frame where a face
    was confirmed. Same frames, same detector: where the two runs differ, the gate did."""
    from daemon.camera_frames import Frame
    from daemon.config_file import parse_config
    from daemon.events import EventSinks
    from daemon.motion import MotionDetector
    from daemon.scheduler import Pipeline
    from engines.mtcnn import MTCNN
    from tests.clips import read_frames

    capture = cv2.VideoCapture(str(clip))
    every = max(1, round(capture.get(cv2.CAP_PROP_FPS) / fps))
    capture.release()
    frames = read_frames(clip, 0, None, every)
    config = parse_config(
        {
            "cameras": [{"name": "door", "url": str(clip), "fps": fps}],
            "detection": {"motion": {"enabled": gate}},
            "recognition": {"model": None},
        }
    )
    confirmed: list[int] = []

    class Sinks(EventSinks):
        def emit(self, event: dict[str, Any], snapshot: bytes | None = None) -> None:
            if event["type"] == "confirmed":
                confirmed.append(round((event["frame_ts"] - 1000.0) * fps) % len(frames))

    pipeline = Pipeline(config, MTCNN.load(REPO / "models" / "mtcnn", threads=2), None, Sinks())
    motion = MotionDetector(
        config.detection.motion.min_change_levels, config.detection.motion.min_area_fraction, fps
    )
    for k, image in enumerate(frames * 2):
        ts = 1000.0 + k / fps
        pipeline.expire(ts)
        pipeline.process([Frame("door", k, ts, image, motion.moved(image))])
    return confirmed


def loop_seconds(clip: Path) -> float:
    capture = cv2.VideoCapture(str(clip))
    try:
        return capture.get(cv2.CAP_PROP_FRAME_COUNT) / capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--cameras", type=int, default=2, help="RTSP cameras, each the clip")
    parser.add_argument("--still", type=float, default=20, help="seconds nobody is in view")
    parser.add_argument("--loops", type=int, default=2, help="whole loops of the clip measured")
    parser.add_argument(
        "--warmup", type=float, default=10, help="seconds before each run's measurement"
    )
    parser.add_argument("--fps", type=float, default=5, help="each camera's frame rate")
    out_argument(parser, DEFAULT_OUT.name)
    return parser


def daemon_runs(args: argparse.Namespace, clip: Path, seconds: float) -> list[dict[str, Any]]:
    """bench_daemon's run with the motion gate on, then off; each printed as it ends."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, gallery = random_model_and_gallery(folder)
        for gate in (True, False):
            run_dir = folder / f"motion-{gate}"
            run_dir.mkdir()
            overrides: dict[str, dict[str, object]] = {"detection": {"motion": {"enabled": gate}}}
            result = run(args.cameras, seconds, args.fps, args.warmup, run_dir, model, gallery,
                         20.0, overrides=overrides, clip=clip)  # fmt: skip
            result["clip"] = {
                "name": clip.name,
                "still_s": args.still,
                "loop_s": seconds / args.loops,
            }
            results.append(result)
            print(json.dumps(result), flush=True)
    return results


def print_table(results: list[dict[str, Any]], same_frames: dict[str, list[float]]) -> None:
    print(
        f"\n{'gate':>5} {'CPU s/s':>8} {'searched/s':>10} {'still/s':>8} {'events':>7} "
        f"{'confirmed':>9} {'p99 ms':>7}"
    )
    for r in results:
        cams = r["per_camera"].values()
        print(
            f"{'on' if r['overrides']['detection']['motion']['enabled'] else 'off':>5} "
            f"{r['cpu_s_per_s']:>8} {sum(c['processed_fps'] for c in cams):>10.2f} "
            f"{sum(c['still_fps'] for c in cams):>8.2f} {r['events']:>7} {r['confirmed']:>9} "
            f"{r['latency_p99_ms']!s:>7}"
        )
    for key, seconds in same_frames.items():
        print(f"{key} (s into the loop, twice round): {seconds}")


def main() -> int:
    args = parser().parse_args()
    clip = doorway_720p(args.still)
    seconds = args.loops * loop_seconds(clip)
    stop_on_sigterm()
    results = daemon_runs(args, clip, seconds)
    # the same frames through the pipeline: when each face was confirmed, with and without
    same_frames = {
        f"gate_{'on' if gate else 'off'}_confirmed_at_s": [
            round(k / args.fps, 1) for k in confirmations(clip, args.fps, gate)
        ]
        for gate in (True, False)
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": results, "same_frames": same_frames}, indent=1) + "\n")
    print_table(results, same_frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
