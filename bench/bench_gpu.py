"""GPU benchmark, side by side in one run: facewatch's GPU backends against facenet-pytorch.

- MTCNN frames/s on batches of ``--batch`` frames (default 16) of crowd_1080p, crowd_720p
  and hamilton_360p: facenet-pytorch 2.6.0 on CUDA, and facewatch's MTCNN on the torch
  backend, frames kept on the device (fp32; fp32 + CUDA graphs; fp16 + CUDA graphs; the last
  also with parallel lanes) and on TensorRT when it is installed. Agreement with the
  reference: faces matched at IoU >= 0.9 (reported, never asserted).
- A cProfile and a torch.profiler table (device time per operator on CUDA) of facewatch's
  MTCNN on one 1080p batch: where the time goes.
- InceptionResnetV1 faces/s at batch ``--faces-batch`` (default 512): facenet-pytorch fp32
  and fp16 autocast, facewatch's torch backend fp32 / fp16 (+ CUDA graphs), input already on
  the device (like the reference) and from host numpy (the Engine API).

Benchmarks measure; they do not assert timings. Writes ``bench_gpu.json`` and ``bench_gpu.md``
to ``--out``. ``--quick`` runs tiny sizes (also on the CPU, for testing this script).

    python bench/bench_gpu.py --out DIR [--frames 64] [--batch 16] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import mtcnn_clips  # noqa: E402  (clips, decoding and settings shared with the CPU bench)
from gpu_facenet import bench_facenet  # noqa: E402
from gpu_timing import kernel_profile, sync, tensorrt_available  # noqa: E402

from engines.boxes import greedy_match  # noqa: E402

Detect = Callable[[list[np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]


def reference_mtcnn(device: str) -> Detect:
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(
        keep_all=True,
        min_face_size=mtcnn_clips.MIN_FACE_SIZE,
        thresholds=list(mtcnn_clips.THRESHOLDS),
        factor=mtcnn_clips.SCALE_FACTOR,
        post_process=False,
        device=device,
    )

    def detect(frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        rgb = np.ascontiguousarray(np.stack(frames)[..., ::-1])
        boxes, probs = mtcnn.detect(rgb)
        return [
            (np.zeros((0, 4)), np.zeros(0)) if b is None else (np.asarray(b), np.asarray(p))
            for b, p in zip(boxes, probs, strict=True)
        ]

    return detect


def facewatch_mtcnn(models: Path, backend: str, env: dict[str, str], lanes: int) -> Detect:
    from engines.detectors import load_detector

    os.environ.update(env)
    det = load_detector(
        models,
        backend=backend,
        threads=lanes,
        lanes=lanes,
        min_face_size=mtcnn_clips.MIN_FACE_SIZE,
        thresholds=mtcnn_clips.THRESHOLDS,
        scale_factor=mtcnn_clips.SCALE_FACTOR,
    )
    for key in env:
        os.environ.pop(key, None)

    def detect(frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(r.bbox_xyxy, r.score) for r in det.detect(frames)]

    return detect


def time_batches(
    detect: Detect, frames: list[np.ndarray], batch: int
) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """Frames/s over all full batches after one untimed warm-up batch; and the detections."""
    batches = [frames[i : i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    detect(batches[0])
    sync()
    found: list[tuple[np.ndarray, np.ndarray]] = []
    start = time.perf_counter()
    for chunk in batches:
        found.extend(detect(chunk))
    sync()
    return len(found) / (time.perf_counter() - start), found


def agreement(
    ref: list[tuple[np.ndarray, np.ndarray]], ours: list[tuple[np.ndarray, np.ndarray]]
) -> str:
    matched = total = extra = 0
    for (rb, _), (ob, _) in zip(ref, ours, strict=True):
        pairs = greedy_match(np.asarray(rb).reshape(-1, 4), np.asarray(ob).reshape(-1, 4), 0.9)
        matched, total, extra = matched + len(pairs), total + len(rb), extra + len(ob) - len(pairs)
    return f"{matched}/{total}" + (f" (+{extra})" if extra else "")


def mtcnn_variants(models: Path, device: str) -> dict[str, Callable[[], Detect]]:
    cuda = device == "cuda"
    graphs = {"FACEWATCH_TORCH_CUDA_GRAPHS": "1"} if cuda else {}
    half = {**graphs, "FACEWATCH_TORCH_FP16": "1"} if cuda else {}
    dev = {"FACEWATCH_TORCH_DEVICE": device}
    variants: dict[str, Callable[[], Detect]] = {
        "facenet-pytorch": lambda: reference_mtcnn(device),
        "facewatch torch fp32": lambda: facewatch_mtcnn(models, "torch", dev, 1),
    }
    if cuda:
        variants["facewatch torch fp32 graphs"] = lambda: facewatch_mtcnn(
            models, "torch", {**dev, **graphs}, 1
        )
        variants["facewatch torch fp16 graphs"] = lambda: facewatch_mtcnn(
            models, "torch", {**dev, **half}, 1
        )
        variants["facewatch torch fp16 graphs, 8 lanes"] = lambda: facewatch_mtcnn(
            models, "torch", {**dev, **half}, 8
        )
    return variants


def tensorrt_mtcnn(models: Path, camera_hw: tuple[int, int], batch: int, precision: str) -> Detect:
    """MTCNN on TensorRT plans built (or taken from the cache) for this camera size."""
    from engines.build import BuildOptions
    from engines.mtcnn import MTCNN
    from engines.tensorrt import TensorRTEngine
    from engines.trt_build import build_engine

    cache = models / "plans"
    options = {
        "pnet": BuildOptions(precision, (1, batch, batch), (camera_hw,)),
        "rnet": BuildOptions(precision, (1, 1024, 16384)),
        "onet": BuildOptions(precision, (1, 256, 4096)),
    }
    nets = {
        n: TensorRTEngine(build_engine(models / f"{n}.onnx", o, cache)) for n, o in options.items()
    }
    det = MTCNN(nets["pnet"], nets["rnet"], nets["onet"])
    return lambda frames: [(r.bbox_xyxy, r.score) for r in det.detect(frames)]


def bench_mtcnn(args: argparse.Namespace, models: Path) -> list[dict[str, Any]]:
    rows = []
    for clip in args.clips.split(","):
        frames = mtcnn_clips.decode_clip(args.data, clip, args.frames)
        ref_found = None
        variants = mtcnn_variants(models, args.device)
        if args.device == "cuda" and tensorrt_available():
            hw = frames[0].shape[:2]
            for precision in ("fp32", "fp16"):
                variants[f"facewatch tensorrt {precision}"] = functools.partial(
                    tensorrt_mtcnn, models, hw, args.batch, precision
                )
        for name, make in variants.items():
            try:
                fps, found = time_batches(make(), frames, args.batch)
            except Exception as exc:  # one failing variant must not hide the others' numbers
                rows.append({"clip": clip, "impl": name, "error": f"{type(exc).__name__}: {exc}"})
                print(f"[bench] {clip} {name}: failed: {exc}", file=sys.stderr, flush=True)
                continue
            if name == "facenet-pytorch":
                ref_found = found
            row = {
                "clip": clip,
                "impl": name,
                "frames_per_s": round(fps, 1),
                "agree": "no reference" if ref_found is None else agreement(ref_found, found),
            }
            rows.append(row)
            print(f"[bench] {row}", file=sys.stderr, flush=True)
    return rows


def profile_mtcnn(args: argparse.Namespace, models: Path) -> str:
    """cProfile of the fp16 torch MTCNN on one batch of the first clip (after a warm-up)."""
    frames = mtcnn_clips.decode_clip(args.data, args.clips.split(",")[0], args.batch)
    variants = mtcnn_variants(models, args.device)
    detect = variants.get("facewatch torch fp16 graphs", variants["facewatch torch fp32"])()
    detect(frames)
    sync()
    prof = cProfile.Profile()
    prof.enable()
    detect(frames)
    sync()
    prof.disable()
    text = io.StringIO()
    text.write("== by cumulative time ==\n")
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(30)
    text.write("== by own time ==\n")
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    text.write(kernel_profile(lambda: detect(frames)))
    return text.getvalue()


def environment(device: str) -> dict[str, str]:
    import torch

    info = {"torch": torch.__version__, "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import facenet_pytorch

        info["facenet_pytorch"] = getattr(facenet_pytorch, "__version__", "installed")
    except ImportError:
        info["facenet_pytorch"] = "missing"
    return info


def markdown(
    env: dict[str, str],
    args: argparse.Namespace,
    mtcnn: list[dict[str, Any]],
    faces: list[dict[str, Any]],
) -> str:
    lines = [f"# GPU benchmark ({', '.join(f'{k} {v}' for k, v in env.items())})", ""]
    lines += [f"## MTCNN, batches of {args.batch} frames ({args.frames} frames per clip)", ""]
    lines += [
        "| clip | implementation | frames/s | faces matched (IoU >= 0.9) vs reference |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['clip']} | {r['impl']} | {r.get('frames_per_s', 'error')} | {r.get('agree', r.get('error', ''))} |"
        for r in mtcnn
    ]
    lines += [
        "",
        f"## InceptionResnetV1, batch {args.faces_batch}",
        "",
        "| implementation | faces/s |",
        "|---|---|",
    ]
    lines += [f"| {r['impl']} | {r['faces_per_s']} |" for r in faces]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=mtcnn_clips.DEFAULT_DATA)
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        help="MTCNN folder with .onnx + .pt2 (default: exported into a temp dir)",
    )
    p.add_argument("--clips", default="crowd_1080p,crowd_720p,hamilton_360p")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--faces-batch", type=int, default=512)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for testing the script")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.batch, args.faces_batch, args.iters = 2, 1, 2, 1
        args.clips = "hamilton_360p"
    return args


def export_mtcnn_programs(folder: Path, data: Path) -> Path:
    """models/mtcnn's ONNX + sidecars copied to ``folder``, with .pt2 programs exported beside."""
    import shutil

    from training.export_torch import export_mtcnn

    for name in ("pnet", "rnet", "onet"):
        for suffix in (".onnx", ".json"):
            shutil.copy(mtcnn_clips.DEFAULT_MODELS / f"{name}{suffix}", folder)
    export_mtcnn(data / "weights" / "mtcnn", folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = args.models
        if models is None:
            models = export_mtcnn_programs(work, args.data)
        env = environment(args.device)
        mtcnn = bench_mtcnn(args, models)
        (args.out / "profile_mtcnn.txt").write_text(profile_mtcnn(args, models))
        faces = bench_facenet(args, work)
    report = markdown(env, args, mtcnn, faces)
    (args.out / "bench_gpu.md").write_text(report)
    (args.out / "bench_gpu.json").write_text(
        json.dumps(
            {
                "env": env,
                "args": {k: str(v) for k, v in vars(args).items()},
                "mtcnn": mtcnn,
                "facenet": faces,
            },
            indent=2,
        )
    )
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
