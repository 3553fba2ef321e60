"""`facewatch engines build|list|prune`: compile ONNX models to TensorRT plans, list cached
plans, delete those this machine will not open again."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from daemon.cli_args import number
from daemon.config import ConfigError, plan_request
from daemon.config_file import load_config
from daemon.journal import print_error
from engines import EngineError
from engines.base import CROPS_PER_CALL, DEFAULT_MAX_BATCH, ModelMetadata, file_sha256
from engines.build import (
    DEFAULT_BATCH,
    DEFAULT_WORKSPACE_BYTES,
    BuildOptions,
    PlanRequest,
    camera_size_hw,
    default_batch,
)
from engines.mtcnn import MIN_FACE_SIZE_BOUNDS, SCALE_FACTOR_BOUNDS, MTCNNConfig
from engines.plan_cache import (
    cache_key,
    cache_paths,
    damaged,
    debris,
    default_cache_dir,
    read_manifests,
    remove_plan,
    stale_plans,
    unreadable_plans,
)
from engines.trt_build import build_engine

# the options that --config takes from the file instead (engines.tensorrt and the detector)
PLAN_FLAGS = {
    "fp16": "--fp16",
    "int8": "--int8",
    "calib_dir": "--calib-dir",
    "calib_images": "--calib-images",
    "batch": "--batch",
    "camera": "--camera",
    "min_face_size": "--min-face-size",
    "scale_factor": "--scale-factor",
    "workspace_bytes": "--workspace-bytes",
}

logger = logging.getLogger(__name__)


def parse_wh(text: str) -> tuple[int, int]:
    """--camera's argparse type: '1920x1080' -> (1080, 1920) as (height, width), as the
    config's ``camera_sizes`` take it (``camera_size_hw``)."""
    try:
        return camera_size_hw(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "engines",
        help="build TensorRT engines from ONNX models, list and prune cached ones",
        description="Compile ONNX models to TensorRT plans (cached by ONNX hash, TensorRT "
        "version, GPU and build options), list the plans in the cache, and delete those "
        "this machine will not open again.",
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
    pr = sub.add_parser(
        "prune",
        help="delete cached plans this machine will not open again",
        description="Delete the plans built for another TensorRT version or GPU (after an "
        "upgrade), and with --config every plan that configuration does not open (after "
        "changes of cameras or precision). Needs TensorRT, to know its version and the GPU; "
        "--all deletes every plan, without it. Also what no plan uses: the scratch files of "
        "builds that were cut, plans without a manifest, manifests and calibration caches "
        "without a plan, the timing caches of another TensorRT or GPU (with --all, all).",
    )
    pr.add_argument("--config", "-c", type=Path, help="keep only the plans this daemon opens")
    pr.add_argument("--cache-dir", type=Path, default=None, help="plan cache (as for list)")
    pr.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    pr.add_argument(
        "--all",
        action="store_true",
        help="every cached plan (also where TensorRT is gone, and those whose manifest "
        "cannot be read)",
    )
    pr.set_defaults(func=run_prune)


def _register_build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser(
        "build",
        help="compile an ONNX model (with its .json sidecar), or a daemon config's models, to plans",
        description="Compile MODEL.onnx with the options given, or with --config every model "
        "a daemon configuration opens (P-Net, R-Net, O-Net and its FaceNet) with the options "
        "it asks for (engines.tensorrt, detection, batching.max_batch): the plans the daemon "
        "then finds in the cache. A plan already built with the same options is reused.",
    )
    b.add_argument("model", type=Path, nargs="?", metavar="MODEL.onnx")
    b.add_argument(
        "--config",
        "-c",
        type=Path,
        help="a daemon YAML file: build the plans it opens (instead of MODEL.onnx and options)",
    )
    _add_precision_options(b)
    _add_profile_options(b)
    b.add_argument(
        "--workspace-bytes", type=int, help=f"builder workspace (default {DEFAULT_WORKSPACE_BYTES})"
    )
    b.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="plan cache (default: $FACEWATCH_ENGINE_CACHE, else ~/.cache/facewatch/engines)",
    )
    b.add_argument("--force", action="store_true", help="rebuild even if a cached plan matches")
    b.set_defaults(func=run_build)


def _add_precision_options(b: argparse.ArgumentParser) -> None:
    """--fp16 or --int8, and int8's calibration images."""
    precision = b.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", default=None, help="allow fp16 kernels")
    precision.add_argument(
        "--int8", action="store_true", default=None, help="int8 with entropy calibration"
    )
    b.add_argument("--calib-dir", type=Path, help="images for int8 calibration (with --int8)")
    b.add_argument("--calib-images", type=int, help="at most this many (default 256)")


def _add_profile_options(b: argparse.ArgumentParser) -> None:
    """--batch, --camera, --min-face-size and --scale-factor: the optimisation profiles'
    batch and image sizes."""
    b.add_argument(
        "--batch",
        type=int,
        nargs=3,
        metavar=("MIN", "OPT", "MAX"),
        default=None,
        help="batch sizes of the optimisation profile (default: P-Net "
        f"{' '.join(map(str, DEFAULT_BATCH))} frames, R-Net / O-Net 1 128 {CROPS_PER_CALL} "
        f"candidates, FaceNet 1 16 {DEFAULT_MAX_BATCH} faces; --config FILE builds exactly the "
        "plans that config's daemon opens)",
    )
    b.add_argument(
        "--camera",
        type=parse_wh,
        action="append",
        default=None,
        metavar="WxH",
        help="a camera resolution (P-Net: its pyramid sizes go into the profiles); repeatable",
    )
    b.add_argument(
        "--min-face-size",
        type=number(float, **MIN_FACE_SIZE_BOUNDS),
        help=f"as the detector (default {MTCNNConfig.min_face_size:g})",
    )
    b.add_argument(
        "--scale-factor",
        type=number(float, **SCALE_FACTOR_BOUNDS),
        help=f"as the detector (default {MTCNNConfig.scale_factor:g})",
    )


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    """The options of `engines build MODEL ...`; those not given keep BuildOptions' defaults."""
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    given = {
        "camera_hw": tuple(args.camera) if args.camera else None,
        "min_face_size": args.min_face_size,
        "scale_factor": args.scale_factor,
        "workspace_bytes": args.workspace_bytes,
        "calib_dir": str(args.calib_dir) if args.calib_dir else None,
        "calib_images": args.calib_images,
    }
    return BuildOptions(
        precision=precision,
        batch=tuple(args.batch) if args.batch else default_batch(ModelMetadata.load(args.model)),
        **{key: value for key, value in given.items() if value is not None},
    )


def config_models(config_path: Path) -> tuple[list[Path], PlanRequest]:
    """The ONNX models a daemon config opens, and what it asks of the tensorrt backend."""
    from daemon.preflight import resolve_model  # the daemon's own choice of FaceNet

    config = load_config(config_path, secrets=False)  # builds need no camera or broker
    if config.engines.backend != "tensorrt":
        raise ConfigError(
            f"{config_path}: engines.backend is {config.engines.backend}: the daemon opens no "
            "TensorRT plans (set engines.backend: tensorrt)"
        )
    models = [Path(config.engines.mtcnn_dir) / f"{name}.onnx" for name in ("pnet", "rnet", "onet")]
    facenet = resolve_model(config)
    if facenet is not None:
        models.append(facenet)
    return models, plan_request(config, config_path)


def run_build(args: argparse.Namespace) -> int:
    try:
        if args.config is not None:
            given = [flag for key, flag in PLAN_FLAGS.items() if getattr(args, key) is not None]
            if args.model is not None or given:
                raise ConfigError(
                    f"--config takes the models and their options from {args.config}; "
                    f"leave out {' '.join(given) or 'MODEL.onnx'}"
                )
            models, request = config_models(args.config)
            cache_dir = args.cache_dir or request.cache_dir
            plans = [
                build_engine(
                    model, request.options_for(ModelMetadata.load(model)), cache_dir, args.force
                )
                for model in models
            ]
        elif args.model is None:
            raise ConfigError("give MODEL.onnx, or --config FILE for a daemon's models")
        else:
            plans = [build_engine(args.model, options_from_args(args), args.cache_dir, args.force)]
    except (EngineError, ConfigError) as exc:
        print_error(f"engines build: {exc}")
        return 2
    print("\n".join(map(str, plans)))
    return 0


def run_prune(args: argparse.Namespace) -> int:
    cache_dir = args.cache_dir or default_cache_dir()
    cached = [plan for plan, _ in read_manifests(cache_dir)]
    if args.all:  # every plan, and every file the cache holds besides (timing caches too)
        return _delete([*cached, *unreadable_plans(cache_dir)], debris(cache_dir), args.dry_run)
    if not cached:  # (what a cut build left needs no TensorRT to go)
        left = [p for p in debris(cache_dir) if not p.name.startswith("timing-")]
        if not left:
            print(f"no plans in {cache_dir}")
            return 0
        return _delete([], left, args.dry_run)
    try:
        stale, left = _stale(args, cache_dir)
    except (EngineError, ConfigError) as exc:
        print_error(f"engines prune: {exc} (--all deletes every plan)")
        return 2
    return _delete(stale, left, args.dry_run)


def _stale(args: argparse.Namespace, cache_dir: Path) -> tuple[list[Path], list[Path]]:
    """The plans of ``cache_dir`` this machine (and with --config, that daemon) will not
    open, and the other files it will not use (``debris``)."""
    from engines.tensorrt import gpu_info, import_tensorrt

    trt, gpu = import_tensorrt(), gpu_info()
    keep = None
    if args.config is not None:
        models, request = config_models(args.config)
        keep = set()
        for model in models:
            options = request.options_for(ModelMetadata.load(model))
            key = cache_key(file_sha256(model), trt.__version__, gpu, options)
            keep.add(cache_paths(cache_dir, model.stem, key, trt.__version__, gpu).plan)
    stale = stale_plans(cache_dir, trt.__version__, gpu, keep)
    return stale, debris(cache_dir, trt.__version__, gpu)


def _delete(plans: list[Path], others: list[Path], dry_run: bool) -> int:
    freed = 0
    for plan in plans:
        freed += plan.stat().st_size if dry_run else remove_plan(plan)
        print(f"{'would delete' if dry_run else 'deleted'} {plan}")
    for path in others:  # (a plan's calibration cache may have gone with it)
        if path.is_file():
            freed += path.stat().st_size
            if not dry_run:
                path.unlink()
            print(f"{'would delete' if dry_run else 'deleted'} {path}")
    more = f", {len(others)} other file(s)" if others else ""
    print(f"{len(plans)} plan(s){more}, {freed / 1e6:.1f} MB{' (dry run)' if dry_run else ''}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    cache_dir = args.cache_dir or default_cache_dir()
    plans = read_manifests(cache_dir)
    if not plans:
        print(f"no plans in {cache_dir}")
        return 0
    for plan, m in plans:
        opts = m.options if isinstance(m.options, dict) else {}
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.built_at))
        cams = ",".join(f"{w}x{h}" for h, w in opts.get("camera_hw", [])) or "-"
        # (its bytes read: about 0.5 s per 300 MB of plans on an x86 core)
        flaw = "  DAMAGED: not the file built (sha256 differs from its manifest's)"
        print(
            f"{plan.name}  {Path(m.model).name}  {opts.get('precision')}  "
            f"batch {'/'.join(map(str, opts.get('batch', [])))}  cameras {cams}  "
            f"TensorRT {m.tensorrt}  {m.gpu}  {plan.stat().st_size / 1e6:.1f} MB  {built}"
            f"{flaw if damaged(plan) else ''}"
        )
    return 0
