"""The real daemon on N RTSP cameras: sustained rate, drops, frame->event latency, RSS,
CPU time per stage.

Each camera is GStreamer's RTSP server looping ``crowd_1080p.mp4`` resized to 720p (3-7
faces per frame), read at ``--fps`` (default 5). A real mosquitto receives the events; the
latency is ``published_ts - frame_ts`` of every event received. Recognition runs with the
test FaceNet (random Inception-ResNet-v1 weights: the same computation as a trained one) and
a gallery of one person. Run from the repository root:

    .venv/bin/python bench/bench_daemon.py --cameras 1 2 4 --seconds 60

Writes --out (by default bench/.cache/daemon.json, git-ignored; the committed results in
bench/results/ are written only when --out names them) and prints a table. It measures;
it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon_figures import figures  # noqa: E402  (bench/, the script's folder)
from script_support import CACHE, out_argument, stop_on_sigterm  # noqa: E402

from tests.facenet_model import build_test_model  # noqa: E402
from tests.integration.services import (  # noqa: E402
    Daemon,
    Mosquitto,
    RtspServer,
    Subscriber,
    daemon_settings,
    wait_for,
)

SOURCE = REPO.parent / "shared" / "data" / "videos" / "crowd_1080p.mp4"
DEFAULT_OUT = CACHE / "daemon.json"  # not bench/results/: a rerun keeps the committed one


def clip_720p() -> Path:
    """crowd_1080p.mp4 scaled to 1280x720 H.264 once (GStreamer, no re-encode later)."""
    out = CACHE / "crowd_720p.mp4"
    if out.is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    pipeline = (
        f'filesrc location="{SOURCE}" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert '
        "! videoscale ! video/x-raw,width=1280,height=720 ! x264enc speed-preset=medium "
        f'key-int-max=25 bframes=0 ! h264parse ! mp4mux ! filesink location="{out}"'
    )
    subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], check=True)
    return out


def random_model_and_gallery(folder: Path, more_people: int = 0) -> tuple[Path, Path]:
    """The test FaceNet (random weights: a trained one's computation) and a gallery of one
    person enrolled with it, in ``folder``; with ``more_people`` more, of 5 random faces each
    (a gallery's size is what matching costs, whoever is in it)."""
    from daemon.cli import main as facewatch
    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment

    model = build_test_model(folder / "model", REPO.parent / "shared" / "data")
    gallery = folder / "gallery.sqlite"
    person = REPO / "configs" / "demo" / "people" / "lin-manuel-miranda" / "reference.png"
    facewatch(["enroll", "--name", "lmm", str(person), "--model", str(model),
               "--gallery", str(gallery), "--no-progress"])  # fmt: skip
    if more_people:
        rng = np.random.default_rng(0)
        with Gallery.open(gallery, writable=True) as opened:
            faces = rng.standard_normal((more_people * 5, opened.embedding_size))
            faces = faces.astype(np.float32)
            faces /= np.linalg.norm(faces, axis=1, keepdims=True)
            opened.enroll(
                [Enrollment(f"p{k // 5}", face, f"{k:064x}") for k, face in enumerate(faces)]
            )
    return model, gallery


def sample_rss(pid: int, stop: threading.Event, into: list[float]) -> None:
    status = Path(f"/proc/{pid}/status")
    while not stop.wait(0.5):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    into.append(int(line.split()[1]) / 1024)
        except OSError:
            return


def daemon_config(
    cameras: list[dict[str, Any]],
    broker_port: int,
    folder: Path,
    model: Path,
    gallery: Path,
    detection: dict[str, object],
    overrides: dict[str, dict[str, object]] | None,
) -> dict[str, Any]:
    """The tests' daemon settings for these cameras and broker, with the model, the gallery,
    the ``detection`` settings and ``overrides`` (section -> settings) on top."""
    settings = daemon_settings(
        cameras,
        broker_port,
        folder,
        recognition={"model": str(model), "gallery": str(gallery)},
        detection=detection,
        logging={"level": "WARNING"},
    )
    for section, values in (overrides or {}).items():
        settings[section] = {**settings.get(section, {}), **values}
    return settings


def measure(
    daemon: Daemon,
    subscriber: Subscriber,
    warmup_s: float,
    seconds: float,
    running: contextlib.ExitStack,
) -> tuple[dict[str, float], dict[str, float], float, list[dict[str, Any]], list[float]]:
    """After the first batch and ``warmup_s``: the daemon's metrics before and after
    ``seconds`` (and the seconds they were apart), the events received meanwhile and its RSS
    every 0.5 s. The daemon's log on stderr when that fails."""
    rss: list[float] = []
    stop = threading.Event()
    running.callback(stop.set)
    try:
        wait_for(lambda: daemon.metric("facewatch_batch_frames_count") > 0, 120, "first batch")
        time.sleep(warmup_s)
        before, t0 = daemon.metrics(), time.monotonic()
        n_events = len(subscriber.events())
        sampler = threading.Thread(target=sample_rss, args=(daemon.proc.pid, stop, rss))  # type: ignore[union-attr]
        sampler.start()
        time.sleep(seconds)
        after, elapsed = daemon.metrics(), time.monotonic() - t0
        events = subscriber.events()[n_events:]
    except Exception:
        print(daemon.log()[-3000:], file=sys.stderr)
        raise
    return before, after, elapsed, events, rss


def run(
    n: int,
    seconds: float,
    fps: float,
    warmup_s: float,
    folder: Path,
    model: Path,
    gallery: Path,
    min_face: float,
    full_scan_every: int = 1,
    overrides: dict[str, dict[str, object]] | None = None,
    clip: Path | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    clip = clip or clip_720p()
    names = [f"cam{k + 1}" for k in range(n)]
    # each part is stopped however the run ends, a start that fails included (its stop is
    # registered before its start: a broker left running held its port with PPID 1)
    with contextlib.ExitStack() as running:
        broker = Mosquitto(folder)
        running.callback(broker.stop)
        broker.start()
        rtsp = RtspServer(folder, dict.fromkeys(names, clip))
        running.callback(rtsp.stop)
        rtsp.start()
        cameras = [{"name": c, "url": rtsp.url(c), "fps": fps} for c in names]
        detection: dict[str, object] = {
            "min_face_size": min_face,
            "full_scan_every": full_scan_every,
        }
        settings = daemon_config(cameras, broker.port, folder, model, gallery, detection, overrides)
        subscriber = Subscriber(broker.port, "facewatch/test/events/#")
        running.callback(subscriber.close)
        daemon = Daemon(folder, settings, env)
        running.callback(daemon.stop)
        daemon.start()
        measured = measure(daemon, subscriber, warmup_s, seconds, running)
    settings_used = {
        "cameras": n,
        "target_fps": fps,
        "min_face_size": min_face,
        "full_scan_every": full_scan_every,
        "overrides": overrides or {},
        "env": env or {},
    }
    return {**settings_used, **figures(names, *measured)}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--cameras", type=int, nargs="+", default=[1, 2, 4], help="one run per camera count"
    )
    parser.add_argument("--seconds", type=float, default=60, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=10, help="seconds before the measurement")
    parser.add_argument("--fps", type=float, default=5, help="each camera's frame rate")
    parser.add_argument("--min-face-size", type=float, default=20, help="detection.min_face_size")
    parser.add_argument("--full-scan-every", type=int, default=1, help="detection.full_scan_every")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any other daemon setting, e.g. batching.max_batch=2 (repeatable)",
    )
    parser.add_argument(
        "--gallery-people",
        type=int,
        default=0,
        metavar="N",
        help="enroll N more people (5 random faces each) beside the one of the clip",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="the daemon's environment, e.g. PYTHONPATH=/tmp/old-checkout to run another "
        "commit's code or OPENBLAS_NUM_THREADS=2 (repeatable)",
    )
    out_argument(parser, DEFAULT_OUT.name)
    return parser


def parse_overrides(
    parser: argparse.ArgumentParser, items: list[str]
) -> dict[str, dict[str, object]]:
    """--set SECTION.KEY=VALUE items as section -> {key: value} (values read as YAML)."""
    overrides: dict[str, dict[str, object]] = {}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not (section and name and value):
            parser.error(f"--set {item}: expected SECTION.KEY=VALUE")
        overrides.setdefault(section, {})[name] = yaml.safe_load(value)
    return overrides


def run_all(
    args: argparse.Namespace, overrides: dict[str, dict[str, object]], env: dict[str, str]
) -> list[dict[str, Any]]:
    """One run per --cameras count, in a folder of its own, each printed as it ends."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, gallery = random_model_and_gallery(folder, args.gallery_people)
        for n in args.cameras:
            run_dir = folder / f"run{n}"
            run_dir.mkdir()
            result = run(
                n,
                args.seconds,
                args.fps,
                args.warmup,
                run_dir,
                model,
                gallery,
                args.min_face_size,
                args.full_scan_every,
                overrides,
                env=env,
            )
            result["gallery_people"] = 1 + args.gallery_people
            results.append(result)
            print(json.dumps(result), flush=True)
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"\n{'cams':>4} {'fps/cam':>8} {'dropped':>8} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} {'CPU s/s':>7}  ms/frame by stage"
    )
    for r in results:
        fps_cam = np.mean([c["processed_fps"] for c in r["per_camera"].values()])
        dropped = sum(c["dropped"] for c in r["per_camera"].values())
        print(
            f"{r['cameras']:>4} {fps_cam:>8.2f} {dropped:>8.0f} {r['latency_p50_ms']!s:>7} {r['latency_p99_ms']!s:>7} "
            f"{r['rss_max_mb']!s:>7} {r['cpu_s_per_s']:>7}  {r['stage_ms_per_frame']}"
        )


def main() -> int:
    p = parser()
    args = p.parse_args()
    if min(args.cameras) < 1:
        p.error(f"--cameras {' '.join(map(str, args.cameras))}: each must be 1 or more")
    env = dict(item.partition("=")[::2] for item in args.env)
    if not SOURCE.is_file():
        print(f"{SOURCE} not found (the shared data folder)", file=sys.stderr)
        return 1
    overrides = parse_overrides(p, args.set)
    stop_on_sigterm()
    results = run_all(args, overrides, env)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
