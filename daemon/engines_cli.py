"""`facewatch engines build|list`: compile ONNX models to TensorRT plans, list cached plans."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from engines import EngineError
from engines.base import ModelMetadata
from engines.build import (
    DEFAULT_BATCH,
    DEFAULT_WORKSPACE_BYTES,
    BuildOptions,
    default_cache_dir,
    read_manifests,
)
from engines.facenet import DEFAULT_MAX_BATCH
from engines.mtcnn import CROPS_PER_CALL
from engines.trt_build import build_engine

logger = logging.getLogger(__name__)


def parse_wh(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1080, 1920) as (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}"
        ) from None
    return h, w


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "engines",
        help="build TensorRT engines from ONNX models and list cached ones",
        description="Compile ONNX models to TensorRT plans (cached by ONNX hash, TensorRT "
        "version, GPU and build options) and list the plans in the cache.",
    )
    sub = p.add_subparsers(dest="engines_command", metavar="ACTION", required=True)
    _register_build(sub)
    ls = sub.add_parser("list", help="list cached plans")
    ls.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="plan cache (default: $FACEWATCH_ENGINE_CACHE, else ~/.cache/facewatch/engines)",
    )
    ls.set_defaults(func=run_list)


def _register_build(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build", help="compile an ONNX model (with its .json sidecar) to a plan")
    b.add_argument("model", type=Path, metavar="MODEL.onnx")
    precision = b.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    precision.add_argument("--int8", action="store_true", help="int8 with entropy calibration")
    b.add_argument("--calib-dir", type=Path, help="images for int8 calibration (with --int8)")
    b.add_argument("--calib-images", type=int, default=256, help="at most this many (default 256)")
    b.add_argument(
        "--batch",
        type=int,
        nargs=3,
        metavar=("MIN", "OPT", "MAX"),
        default=None,
        help="batch sizes of the optimisation profile (default: what the daemon asks of the "
        f"model: P-Net {' '.join(map(str, DEFAULT_BATCH))} frames, R-Net / O-Net 1 128 1024 "
        "candidates, FaceNet 1 16 64 faces)",
    )
    b.add_argument(
        "--camera",
        type=parse_wh,
        action="append",
        default=[],
        metavar="WxH",
        help="a camera resolution (P-Net: its pyramid sizes go into the profiles); repeatable",
    )
    b.add_argument("--min-face-size", type=float, default=20.0, help="as the detector (default 20)")
    b.add_argument(
        "--scale-factor", type=float, default=0.709, help="as the detector (default 0.709)"
    )
    b.add_argument("--workspace-bytes", type=int, default=DEFAULT_WORKSPACE_BYTES)
    b.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="plan cache (default: $FACEWATCH_ENGINE_CACHE, else ~/.cache/facewatch/engines)",
    )
    b.add_argument("--force", action="store_true", help="rebuild even if a cached plan matches")
    b.set_defaults(func=run_build)


def default_batch(meta: ModelMetadata) -> tuple[int, int, int]:
    """The batch profile (min, opt, max) that covers what facewatch asks of a model: P-Net
    one call per batch of frames, R-Net / O-Net up to ``CROPS_PER_CALL`` face candidates per
    call, FaceNet up to ``DEFAULT_MAX_BATCH`` faces per call."""
    if meta.input_size_hw is None:  # P-Net: frames per batch
        return DEFAULT_BATCH
    if meta.kind == "facenet":
        return (1, 16, DEFAULT_MAX_BATCH)
    return (1, 128, CROPS_PER_CALL)


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    return BuildOptions(
        precision=precision,
        batch=tuple(args.batch) if args.batch else default_batch(ModelMetadata.load(args.model)),
        camera_hw=tuple(args.camera),
        min_face_size=args.min_face_size,
        scale_factor=args.scale_factor,
        workspace_bytes=args.workspace_bytes,
        calib_dir=str(args.calib_dir) if args.calib_dir else None,
        calib_images=args.calib_images,
    )


def run_build(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
        plan = build_engine(args.model, options, args.cache_dir, force=args.force)
    except EngineError as exc:
        print(f"facewatch engines build: {exc}", file=sys.stderr)
        return 2
    print(plan)
    return 0


def run_list(args: argparse.Namespace) -> int:
    cache_dir = args.cache_dir or default_cache_dir()
    plans = read_manifests(cache_dir)
    if not plans:
        print(f"no plans in {cache_dir}")
        return 0
    for plan, m in plans:
        opts = m.options
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.built_at))
        cams = ",".join(f"{w}x{h}" for h, w in opts.get("camera_hw", [])) or "-"
        print(
            f"{plan.name}  {Path(m.model).name}  {opts.get('precision')}  "
            f"batch {'/'.join(map(str, opts.get('batch', [])))}  cameras {cams}  "
            f"TensorRT {m.tensorrt}  {m.gpu}  {plan.stat().st_size / 1e6:.1f} MB  {built}"
        )
    return 0
