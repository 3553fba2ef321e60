"""The TensorRT side of the builder: ``build_engine`` and its TensorRT calls
(``engines.build`` holds the pure logic around them), and ``open_plan_for``, which opens
the plan of an ONNX model (building it first when asked) with ``engines.tensorrt``.

TensorRT 10 API: ``Builder.create_network(0)`` (explicit batch is the only mode),
``OnnxParser`` with every error reported with its node, ``IBuilderConfig`` with the
workspace pool limit, precision flags, optimisation profiles and a timing cache, and an
``IInt8EntropyCalibrator2`` fed from a folder of images through the sidecar's preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.base import EngineError, ModelMetadata, file_sha256
from engines.build import (
    BuildError,
    BuildOptions,
    BuildProgress,
    PlanRequest,
    ShapeProfile,
    model_profiles,
)
from engines.image_files import PHOTO_SUFFIXES, folder_files
from engines.images import ImageError, read_image
from engines.plan_cache import (
    CachePaths,
    Manifest,
    cache_key,
    cache_paths,
    cached_plan,
    damaged,
    default_cache_dir,
    find_cached_plan,
    remove_plan,
    write_durably,
)
from engines.tensorrt import (
    TensorRTEngine,
    cuda_check,
    gpu_info,
    import_cudart,
    import_tensorrt,
)

logger = logging.getLogger(__name__)


def parser_errors(parser: Any) -> list[str]:
    """One line per ONNX parser error: the node index, name and operator, and the message."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node()
        where = f"node {node}" if node >= 0 else "graph"
        name = getattr(err, "node_name", lambda: "")()
        op = getattr(err, "node_operator", lambda: "")()
        if name or op:
            where += f" ({name or '?'}: {op or '?'})"
        lines.append(f"{where}: {err.desc()} [code {err.code()}]")
    return lines


def parse_onnx(trt: Any, builder: Any, logger_trt: Any, onnx_path: Path) -> tuple[Any, Any]:
    """The network of ``onnx_path``; BuildError listing every parser error with its node."""
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger_trt)
    ok = parser.parse(onnx_path.read_bytes(), str(onnx_path))
    if not ok:
        errors = "\n  ".join(parser_errors(parser)) or "(no details)"
        raise BuildError(f"{onnx_path}: TensorRT's ONNX parser failed:\n  {errors}")
    return network, parser


def preprocess(
    bgr_images: list[np.ndarray], meta: ModelMetadata, shape_nchw: tuple[int, ...]
) -> np.ndarray:
    """Images -> the model's input at ``shape_nchw`` (area resize, sidecar constants)."""
    _, _, h, w = shape_nchw
    out = np.empty((len(bgr_images), 3, h, w), np.float32)
    for k, image in enumerate(bgr_images):
        pixels = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        if meta.channel_order.upper() == "RGB":
            pixels = pixels[..., ::-1]
        if meta.extra.get("prewhiten"):
            std = max(float(pixels.std()), 1.0 / np.sqrt(pixels.size))
            pixels = (pixels - pixels.mean()) / std
        else:
            pixels = (pixels - meta.mean) / meta.std
        out[k] = pixels.transpose(2, 0, 1)
    return out


def calibration_batches(
    folder: str | Path, meta: ModelMetadata, shape_nchw: tuple[int, ...], limit: int
) -> list[np.ndarray]:
    """Full batches of ``shape_nchw`` from up to ``limit`` images of ``folder`` (recursive)."""
    root = Path(folder)
    if not root.is_dir():
        raise BuildError(f"{root}: calibration folder not found")
    files = folder_files(root, PHOTO_SUFFIXES).files[:limit]
    images = []
    for path in files:
        try:
            images.append(read_image(str(path)))
        except ImageError as exc:
            logger.warning("calibration image skipped: %s", exc)
    batch = shape_nchw[0]
    if len(images) < batch:
        raise BuildError(
            f"{root}: {len(images)} usable calibration images, need at least one batch of {batch}"
        )
    return [
        preprocess(images[i : i + batch], meta, shape_nchw)
        for i in range(0, len(images) - batch + 1, batch)
    ]


def make_calibrator(trt: Any, name: str, batches: list[np.ndarray], cache_path: Path) -> Any:
    """An entropy calibrator (TensorRT's recommended one) with a calibration cache file."""
    cudart = import_cudart()

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.device = cuda_check(cudart, cudart.cudaMalloc(batches[0].nbytes), "cudaMalloc")

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(batches):
                return None
            data = np.ascontiguousarray(batches[self.index])
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            cuda_check(
                cudart,
                cudart.cudaMemcpy(self.device, data.ctypes.data, data.nbytes, kind),
                "cudaMemcpy",
            )
            self.index += 1
            return [self.device]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            cache_path.write_bytes(bytes(cache))
            logger.info("wrote calibration cache %s", cache_path)

        def free(self) -> None:
            if self.device:
                cudart.cudaFree(self.device)
                self.device = 0

    logger.info("int8 calibration of %s: %d batches", name, len(batches))
    return Calibrator()


def attach_progress(trt: Any, config: Any, progress: BuildProgress) -> Any:
    """Report the build's progress to ``progress`` (TensorRT 10's ``IProgressMonitor``);
    returns the monitor, which must outlive the build. None where TensorRT has none."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            progress.phase_finish(phase_name)

    monitor = Monitor()
    config.progress_monitor = monitor
    return monitor


def _add_profiles(builder: Any, config: Any, profiles: list[ShapeProfile]) -> Any:
    first = None
    for shape in profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(shape.name, shape.min, shape.opt, shape.max)
        if config.add_optimization_profile(profile) < 0:
            raise BuildError(f"TensorRT rejected the optimisation profile {shape}")
        if first is None:
            first = profile
    return first


def _timing_cache(config: Any, path: Path) -> Any:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    return cache


def compile_plan(
    trt: Any, onnx_path: Path, meta: ModelMetadata, options: BuildOptions, paths: CachePaths
) -> tuple[bytes, list[ShapeProfile]]:
    """Parse, configure and build; returns the serialized plan and the profiles used."""
    logger_trt = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger_trt)
    network, _parser = parse_onnx(trt, builder, logger_trt, onnx_path)
    if network.num_inputs != 1:
        raise BuildError(f"{onnx_path}: expected one input tensor, found {network.num_inputs}")
    input_name = network.get_input(0).name
    profiles = model_profiles(meta, input_name, options)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    calib_profile = _add_profiles(builder, config, profiles)
    calibrator = None
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if options.precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            logger.warning("this GPU has no fast int8; the plan may not be faster than fp16")
        config.set_flag(trt.BuilderFlag.INT8)
        batches = calibration_batches(
            options.calib_dir or "", meta, profiles[0].opt, options.calib_images
        )
        calibrator = make_calibrator(trt, onnx_path.stem, batches, paths.calibration_cache)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(calib_profile)
    _timing_cache(config, paths.timing_cache)
    stream = sys.stderr if sys.stderr.isatty() else None  # bars on a terminal, else the log
    _monitor = attach_progress(
        trt, config, BuildProgress(onnx_path.name, stream)
    )  # held to the end
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if plan is None:
        raise BuildError(f"{onnx_path}: TensorRT could not build the engine (see its log above)")
    write_durably(paths.timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan), profiles


def build_engine(
    onnx_path: str | Path,
    options: BuildOptions,
    cache_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Compile ``onnx_path`` to a plan in ``cache_dir`` (reused when the key matches)."""
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise BuildError(f"{onnx_path}: ONNX model not found")
    meta = ModelMetadata.load(onnx_path)
    gpu = gpu_info()
    key = cache_key(file_sha256(onnx_path), trt.__version__, gpu, options)
    paths = cache_paths(cache_dir or default_cache_dir(), onnx_path.stem, key, trt.__version__, gpu)
    if paths.plan.is_file() and not force:
        logger.info("%s: cached plan %s", onnx_path, paths.plan)
        return paths.plan
    paths.plan.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    plan, profiles = compile_plan(trt, onnx_path, meta, options, paths)
    # a daemon and `engines build` may build the same plan at once: each writes its own file
    write_durably(paths.plan, plan)  # (a plan cut short by a power cut is never opened)
    manifest = Manifest(
        model=str(onnx_path.resolve()),
        onnx_sha256=file_sha256(onnx_path),
        tensorrt=trt.__version__,
        gpu=gpu.name,
        compute_capability=list(gpu.compute_capability),
        options=options.key_fields(),
        profiles=[asdict(p) for p in profiles],
        built_at=time.time(),
        build_seconds=round(time.monotonic() - started, 2),
        plan_sha256=hashlib.sha256(plan).hexdigest(),
    )
    write_durably(paths.manifest, (json.dumps(asdict(manifest), indent=2) + "\n").encode())
    logger.info("built %s in %.1f s", paths.plan, manifest.build_seconds)
    return paths.plan


def open_plan_for(model_path: str | Path, request: PlanRequest | None = None) -> TensorRTEngine:
    """A ``.plan`` opens directly. An ``.onnx`` opens its cached plan for this TensorRT and
    GPU: the one ``request`` asks for (built first when missing and ``request.build``), or
    without a request the newest one."""
    path = Path(model_path)
    if path.suffix.lower() != ".onnx":
        return TensorRTEngine(path)
    trt = import_tensorrt()
    gpu = gpu_info()
    cache_dir = Path((request and request.cache_dir) or default_cache_dir())
    if request is None:
        return TensorRTEngine(find_cached_plan(path, cache_dir, trt.__version__, gpu))
    options = request.options_for(ModelMetadata.load(path))
    plan = cached_plan(path, options, cache_dir, trt.__version__, gpu)
    if plan is not None:
        try:
            return TensorRTEngine(plan)
        except EngineError as exc:
            if not request.build or not damaged(plan):  # (short of GPU memory, say: as is)
                raise
            logger.warning("%s: damaged, rebuilt (%s)", plan, exc)  # a power cut, a disk
            remove_plan(plan)
    elif not request.build:
        raise BuildError(request.missing(path, options, cache_dir))
    if request.on_build is not None:
        request.on_build(path)
    return TensorRTEngine(build_engine(path, options, cache_dir))
