"""The daemon's hot path on decoded frames: N cameras at F frames/s into its own scheduler.

Each camera is a thread that hands the scheduler a decoded frame every 1/F seconds, on a
fixed clock, stamped with the time the frame was due: a distinct copy of the clip per camera,
each starting at another frame, the cameras' clocks spread evenly over one frame interval. Behind it runs what the daemon runs (``daemon.scheduler``:
frame queues that drop the oldest frame when a camera gets ahead, batches, detection with
full scans and searches around tracks, tracking, FaceNet on the faces that need it, events),
with the engines the config names. No RTSP and no broker: this is what the GPU must sustain
(issue 6: 16 streams of 1080p at 25 fps, p99 latency <= 100 ms); ``bench_daemon.py`` runs the
whole daemon with RTSP cameras and mosquitto.

Reported: frames offered, processed and dropped, latency from the frame's due time to the end
of its batch (p50 / p95 / p99 / max), the mean batch, and the time per batch of each stage
(the daemon's own facewatch_stage_seconds). ``--profile FILE``: a cProfile of the scheduler
thread (with ``--backend torch`` on CUDA, the time the host waits for the device shows in
the calls that copy results back), and with the torch backend a torch.profiler table of 10
batches: the operators by device time on CUDA. Both cover the second half of the warm-up,
so that the measured figures run without them. FaceNet is the stand-in Inception-ResNet-v1 (random weights, the same computation as
a trained one); no gallery.
It measures; it asserts nothing.

    python bench/bench_streams.py --backend torch --streams 16 --fps 25 --clip crowd_1080p \\
        --seconds 30 --json OUT.json [--fp16 --graphs] [--profile OUT.txt]
    python bench/bench_streams.py --quick   # 2 cameras of 360p on the CPU: tests the script
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import mtcnn_clips  # noqa: E402  (the clips and their decoding)
from gpu_timing import kernel_table, profiler_activities, sync  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from daemon.camera_frames import Frame, FrameQueues  # noqa: E402
from daemon.config import Config  # noqa: E402
from daemon.config_file import parse_config  # noqa: E402
from daemon.events import EventSinks  # noqa: E402
from daemon.scheduler import BatchScheduler, Pipeline  # noqa: E402
from daemon.service import Service  # noqa: E402

STAGES = ("detect", "track", "embed", "match")
KERNEL_BATCHES = 10  # warm-up batches under torch.profiler (torch backend, --profile)


class TimedPipeline(Pipeline):
    """The daemon's pipeline, recording when each frame's batch ends (and profiling it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.measure_from = self.profile_from = float("inf")
        self.latencies: list[float] = []
        self.batches: list[int] = []
        self.processed = 0
        self.profile: cProfile.Profile | None = None
        self.kernels: Any = None  # torch.profiler over the first KERNEL_BATCHES measured
        self.kernel_batches = 0

    def process(self, frames: list[Frame]) -> None:
        measured = frames[0].ts >= self.measure_from
        # profiled: the second half of the warm-up, so that the measured part runs without
        profiled = self.profile_from <= frames[0].ts < self.measure_from
        if profiled and self.profile is not None:
            self.profile.enable()
        kernels = profiled and self.kernels is not None and self.kernel_batches < KERNEL_BATCHES
        if kernels and self.kernel_batches == 0:
            self.kernels.start()
        super().process(frames)
        if kernels:
            self.kernel_batches += 1
            if self.kernel_batches == KERNEL_BATCHES:
                sync()
                self.kernels.stop()
        if profiled and self.profile is not None:
            self.profile.disable()
        done = time.time()
        self.processed += len(frames)
        if measured:
            self.latencies += [done - f.ts for f in frames]
            self.batches.append(len(frames))


def camera(
    name: str,
    frames: list[np.ndarray],
    queues: FrameQueues,
    fps: float,
    start: float,
    stop: float,
    offered: dict[str, int],
) -> None:
    """Puts frame k at ``start + k / fps`` (as soon as it can when late), stamped with that
    time, until ``stop``."""
    k = 0
    while True:
        due = start + k / fps
        if due >= stop:
            break
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        mono = time.monotonic() - (time.time() - due)  # the same instant on the frames' clock
        queues.put(Frame(name, k, due, frames[k % len(frames)], mono=mono))
        offered[name] = k = k + 1


def stage_sums() -> dict[str, float]:
    return {
        s: REGISTRY.get_sample_value("facewatch_stage_seconds_sum", {"stage": s}) or 0.0
        for s in STAGES
    }


def stand_in_facenet(folder: Path, backend: str) -> Path:
    """The stand-in FaceNet as ONNX + sidecar (+ the .pt2 for the torch backend)."""
    import torch

    from training.export_facenet import export_network
    from training.export_torch import standin_facenet

    torch.manual_seed(0)
    net = standin_facenet((torch.rand(16, 3, 160, 160) - 0.5) * 2)
    return export_network(net, folder / "facenet.onnx", torch_program=backend == "torch")


def mtcnn_folder(folder: Path, backend: str, data: Path) -> Path:
    if backend != "torch":
        return mtcnn_clips.DEFAULT_MODELS
    from bench_gpu import export_mtcnn_programs

    return export_mtcnn_programs(folder, data)


def build(args: argparse.Namespace, work: Path) -> tuple[Config, TimedPipeline]:
    config = parse_config(
        {
            "cameras": [{"name": f"cam{k:02d}", "url": "decoded"} for k in range(args.streams)],
            "engines": {
                "backend": args.backend,
                "threads": args.threads,
                "mtcnn_dir": str(mtcnn_folder(work, args.backend, args.data)),
                **(
                    {"fp16": args.fp16, "cuda_graphs": args.graphs}
                    if args.backend == "torch"
                    else {}
                ),
            },
            "batching": {
                "max_batch": args.max_batch,
                "max_wait_ms": args.max_wait_ms,
                "queue_frames": args.queue_frames,
            },
            "detection": {"full_scan_every": args.full_scan_every},
            "recognition": {
                "model": str(stand_in_facenet(work, args.backend)),
                "precision": args.precision,
            },
            "mqtt": {"enabled": False},
        },
        "bench_streams",
    )
    detector, facenet = Service(config).load_engines()  # as the daemon loads them
    return config, TimedPipeline(config, detector, facenet, EventSinks())


def run(args: argparse.Namespace) -> dict[str, Any]:
    clip = mtcnn_clips.decode_clip(args.data, args.clip, args.frames)
    if not clip:
        raise SystemExit(f"{args.clip}: no frames decoded from {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        config, pipeline = build(args, Path(tmp))
        if args.profile:
            pipeline.profile = cProfile.Profile()
            if args.backend == "torch":
                import torch

                pipeline.kernels = torch.profiler.profile(activities=profiler_activities())
        stages, measured_batches, offered = _drive(args, config, pipeline, clip)
    latencies = np.asarray(pipeline.latencies) * 1000
    total = sum(offered.values())
    result = {
        "backend": args.backend,
        "fp16": args.fp16,
        "cuda_graphs": graphs_ran(args),  # asked for with --graphs, and run
        "facenet_precision": args.precision,
        "clip": args.clip,
        "frame_hw": list(clip[0].shape[:2]),
        "streams": args.streams,
        "fps_per_stream": args.fps,
        "seconds": args.seconds,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "full_scan_every": args.full_scan_every,
        "offered_frames": total,
        "processed_frames": pipeline.processed,
        "dropped_frames": total - pipeline.processed,
        "measured_frames": len(latencies),
        "processed_fps": round(len(latencies) / args.seconds, 1),
        "offered_fps": args.streams * args.fps,
        "latency_ms": {
            q: round(float(np.percentile(latencies, p)), 1) if len(latencies) else None
            for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        },
        "mean_batch": round(float(np.mean(pipeline.batches)), 2) if pipeline.batches else None,
        "stage_ms_per_batch": {
            s: round(1000 * v / max(1, measured_batches), 2) for s, v in stages.items()
        },
        "device": device_name(args.backend),
    }
    if args.profile and pipeline.profile is not None:
        _write_profile(Path(args.profile), pipeline)
    return result


def _drive(
    args: argparse.Namespace, config: Config, pipeline: TimedPipeline, clip: list[np.ndarray]
) -> tuple[dict[str, float], int, dict[str, int]]:
    """The cameras' threads feed the scheduler for the warm-up and ``args.seconds``: the
    stage times and batches of the measured part, and the frames each camera offered."""
    names = [c.name for c in config.cameras]
    copies = {
        name: [clip[(k * 7 + i) % len(clip)].copy() for i in range(len(clip))]
        for k, name in enumerate(names)
    }
    queues = FrameQueues(names, config.batching.queue_frames)
    scheduler = BatchScheduler(pipeline, queues)
    offered: dict[str, int] = {}
    start = time.time() + 1.0
    pipeline.measure_from = start + args.warmup
    pipeline.profile_from = start + args.warmup / 2
    stop = start + args.warmup + args.seconds
    # cameras are not in step: camera k's frames come k / (fps * streams) s after cam00's
    phase = 1.0 / (args.fps * len(names))
    cameras = [
        threading.Thread(
            target=camera,
            args=(n, copies[n], queues, args.fps, start + k * phase, stop, offered),
        )
        for k, n in enumerate(names)
    ]
    scheduler.start()
    for thread in cameras:
        thread.start()
    time.sleep(max(0.0, pipeline.measure_from - time.time()))
    before = stage_sums()
    batches_before = len(pipeline.batches)
    for thread in cameras:
        thread.join()
    scheduler.stop()
    scheduler.join(timeout=120)
    if scheduler.error is not None:
        raise SystemExit(f"the scheduler failed: {scheduler.error!r}")
    stages = {s: v - before[s] for s, v in stage_sums().items()}
    return stages, len(pipeline.batches) - batches_before, offered


def _write_profile(path: Path, pipeline: TimedPipeline) -> None:
    """The scheduler thread's profile (and the kernels', on the torch backend) to ``path``."""
    text = io.StringIO()
    stats = pstats.Stats(pipeline.profile, stream=text)
    text.write("== the scheduler thread (second half of the warm-up), by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(35)
    text.write("== by own time ==\n")
    stats.sort_stats("tottime").print_stats(25)
    if pipeline.kernels is not None and pipeline.kernel_batches:
        if pipeline.kernel_batches < KERNEL_BATCHES:  # a short warm-up: fewer batches
            pipeline.kernels.stop()
        count = pipeline.kernel_batches
        text.write(f"== {count} batches of the second half of the warm-up ==\n")
        text.write(kernel_table(pipeline.kernels, rows=40))
    path.write_text(text.getvalue())


def graphs_ran(args: argparse.Namespace) -> bool:
    """Whether CUDA graphs ran: asked for (--graphs), on the torch backend, with a GPU (the
    backend turns them off on the CPU, engines/torch_backend.py)."""
    if not (args.graphs and args.backend == "torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def device_name(backend: str) -> str:
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name())
    return f"CPU ({os.cpu_count()} cores)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", default="openvino", help="engines.backend (torch for the GPU)")
    p.add_argument("--streams", type=int, default=16, help="cameras (default 16)")
    p.add_argument("--fps", type=float, default=25.0, help="frames/s per camera (default 25)")
    p.add_argument("--clip", default="crowd_1080p", choices=sorted(mtcnn_clips.CLIPS))
    p.add_argument("--frames", type=int, default=30, help="decoded frames each camera loops")
    p.add_argument("--seconds", type=float, default=30.0, help="measured time")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds run before measuring")
    p.add_argument("--max-batch", type=int, default=16, help="batching.max_batch")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="batching.max_wait_ms")
    p.add_argument("--queue-frames", type=int, default=2, help="batching.queue_frames")
    p.add_argument("--full-scan-every", type=int, default=5, help="detection.full_scan_every")
    p.add_argument("--threads", type=int, default=0, help="engines.threads (0 = all cores)")
    p.add_argument(
        "--precision", default="auto", help="recognition.precision on the CPU (auto, fp32, bf16)"
    )
    p.add_argument("--fp16", action="store_true", help="torch backend: fp16 autocast")
    p.add_argument("--graphs", action="store_true", help="torch backend: CUDA graphs")
    p.add_argument("--data", type=Path, default=mtcnn_clips.DEFAULT_DATA)
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.add_argument("--profile", type=Path, default=None, help="write a cProfile here")
    p.add_argument("--quick", action="store_true", help="2 cameras of 360p for 3 s")
    args = p.parse_args(argv)
    if args.quick:
        args.streams, args.fps, args.clip, args.frames = 2, 5.0, "hamilton_360p", 5
        args.seconds, args.warmup, args.max_batch, args.threads = 3.0, 2.0, 2, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
