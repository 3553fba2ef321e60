"""The TensorRT backend: runs a serialized plan with TensorRT 10's name-based API.

Memory and streams go through cuda-python (``cuda.bindings.runtime``), NVIDIA's maintained
binding: it installs from wheels and imports without a GPU, unlike pycuda, which compiles
against the CUDA toolkit at install time. Device buffers and pinned host buffers are
allocated once, at the largest shape any optimisation profile allows; each ``infer`` is
host->device copies, one ``execute_async_v3`` and device->host copies on one CUDA stream,
then one synchronisation.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineError, SpecsFromLoad, TensorSpec, install_hint
from engines.plan_cache import GpuInfo

logger = logging.getLogger(__name__)


def install_hint_trt() -> str:
    return (
        f"install TensorRT 10 and cuda-python: `{install_hint('tensorrt')} --extra-index-url "
        "https://pypi.nvidia.com` (NVIDIA's index has TensorRT); on a Jetson TensorRT comes "
        "with JetPack (then the cuda-python of JetPack's CUDA, 12.6 on JetPack 6.1 and 6.2: "
        "`pip install 'cuda-python==12.6.*'`)"
    )


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or one EngineError saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(
            f"the tensorrt backend needs the TensorRT Python package: {install_hint_trt()}"
        ) from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise EngineError(f"the tensorrt backend needs TensorRT >= 10, found {trt.__version__}")
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    import importlib

    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise EngineError(f"the tensorrt backend needs cuda-python: {install_hint_trt()}")


def cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python call's ``(err, *values)``; raise EngineError on any error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
            raise EngineError(f"CUDA error in {what}: {driver_too_old(cudart)}")
        _, text = cudart.cudaGetErrorString(err)
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        raise EngineError(f"CUDA error in {what}: {getattr(err, 'name', err)} ({text})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def cuda_python_version() -> tuple[str, str]:
    """The package that holds the installed cuda-python's modules and its version (('', '')
    when unknown): cuda-bindings (since 12.8), else cuda-python (which held them before)."""
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "", ""


def driver_too_old(cudart: Any) -> str:
    """What cudaErrorInsufficientDriver means here and what to install: cuda-python built for
    a newer CUDA than the driver supports (pip's newest, 13, on a JetPack 6 board, whose
    driver is CUDA 12), or no driver at all. The advice is the newest cuda-python of the
    driver's CUDA (PyPI has no release for some minors, 12.0 and 12.7: a range, not a pin),
    the newer package taken out first (cuda-bindings 13 beside cuda-python 12 is imported)."""
    err, version = cudart.cudaDriverGetVersion()
    if err != cudart.cudaError_t.cudaSuccess or not version:
        return (
            "no CUDA driver answers (cudaErrorInsufficientDriver): install NVIDIA's driver "
            "(on a Jetson it comes with JetPack)"
        )
    major, minor = version // 1000, version % 1000 // 10
    dist, installed = cuda_python_version()
    which = (
        f"{dist} {installed} is built for CUDA {'.'.join(installed.split('.')[:2])}, newer than"
        if installed
        else "the installed cuda-python is built for a newer CUDA than"
    )
    below = f"{major}.{minor + 1}" if minor else f"{major + 1}"
    return (
        f"{which} this machine's driver, which supports CUDA {major}.{minor} "
        "(cudaErrorInsufficientDriver): install the cuda-python of the driver's CUDA, "
        f"`pip uninstall -y cuda-bindings cuda-python && pip install 'cuda-python>={major},"
        f"<{below}'`, or a newer driver"
    )


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of a CUDA device."""
    cudart = import_cudart()
    count = cuda_check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if device >= count:
        raise EngineError(f"CUDA device {device} not found ({count} devices)")
    props = cuda_check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.strip("\x00 "), (int(props.major), int(props.minor)))


@dataclass
class _Binding:
    """One I/O tensor: its spec, numpy dtype, capacity and its device and pinned host memory."""

    spec: TensorSpec
    dtype: np.dtype
    capacity: int  # elements
    device_ptr: int = 0
    host_ptr: int = 0
    host: np.ndarray | None = None


class TensorRTEngine(SpecsFromLoad):
    """One TensorRT plan (``.plan``) on one CUDA stream; implements the Engine protocol."""

    def __init__(self, plan_path: str | Path, warmup: bool = True) -> None:
        self._trt = import_tensorrt()
        self._cudart = import_cudart()
        self.path = Path(plan_path)
        if not self.path.is_file():
            raise EngineError(f"{self.path}: TensorRT plan not found")
        # TensorRT's rule: a factory outlives what it made, and the logger outlives both
        self._logger = self._trt.Logger(self._trt.Logger.WARNING)
        self._runtime = self._trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineError(
                f"{self.path}: TensorRT cannot deserialize the plan (built for another "
                "TensorRT version or GPU, or damaged?); rebuild it with `facewatch engines "
                "build --force`"
            )
        self._context = self._engine.create_execution_context()
        self._stream = cuda_check(self._cudart, self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._profile = 0
        self._bindings: dict[str, _Binding] = {}
        self._profiles: dict[str, list[tuple[tuple[int, ...], ...]]] = {}  # _profile_shapes
        try:
            self._allocate()
            # the largest batch every profile takes: callers split to it (base.batch_limit)
            self.max_batch = min(
                shapes[2][0]
                for name in self._io_names()[0]
                for shapes in self._profile_shapes(name)
            )
            # the largest shape of the first input in each profile (base.input_limits)
            first = self._io_names()[0][0]
            self.max_input_shapes = [shapes[2] for shapes in self._profile_shapes(first)]
            if warmup:
                self._warm_up()
        except Exception:
            self.close()
            raise
        logger.info("loaded %s (%d profiles)", self.path, self._engine.num_optimization_profiles)

    # -- set-up ---------------------------------------------------------------------------

    def _io_names(self) -> tuple[list[str], list[str]]:
        engine, mode = self._engine, self._trt.TensorIOMode
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == mode.INPUT]
        return inputs, [n for n in names if n not in inputs]

    def _profile_shapes(self, name: str) -> list[tuple[tuple[int, ...], ...]]:
        """(min, opt, max) of input ``name`` in each optimisation profile (asked of TensorRT
        once: every ``infer`` picks its profile from them)."""
        if name not in self._profiles:
            engine = self._engine
            self._profiles[name] = [
                tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, p))
                for p in range(engine.num_optimization_profiles)
            ]
        return self._profiles[name]

    def _max_elements(self, inputs: list[str], outputs: list[str]) -> dict[str, int]:
        """Largest element count of every tensor over all profiles (outputs: inputs at max)."""
        most = dict.fromkeys(inputs + outputs, 0)
        for p in range(self._engine.num_optimization_profiles):
            self._select_profile(p)
            for name in inputs:
                shape = self._profile_shapes(name)[p][2]
                self._context.set_input_shape(name, shape)
                most[name] = max(most[name], int(np.prod(shape)))
            for name in outputs:
                shape = tuple(self._context.get_tensor_shape(name))
                most[name] = max(most[name], int(np.prod(shape)))
        return most

    def _allocate(self) -> None:
        inputs, outputs = self._io_names()
        capacity = self._max_elements(inputs, outputs)
        cudart = self._cudart
        for name in inputs + outputs:
            dtype = np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))
            shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name))
            binding = _Binding(TensorSpec(name, shape, dtype.name), dtype, capacity[name])
            nbytes = max(1, binding.capacity * dtype.itemsize)
            binding.device_ptr = cuda_check(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
            binding.host_ptr = cuda_check(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            raw = (ctypes.c_byte * nbytes).from_address(binding.host_ptr)
            binding.host = np.frombuffer(raw, dtype=dtype, count=binding.capacity)
            self._bindings[name] = binding
            logger.debug("%s: %s %s, %d bytes", self.path.name, name, dtype, nbytes)
        self._bind_addresses()
        self._inputs = [self._bindings[n].spec for n in inputs]
        self._outputs = [self._bindings[n].spec for n in outputs]

    def _bind_addresses(self) -> None:
        for name, binding in self._bindings.items():
            if not self._context.set_tensor_address(name, binding.device_ptr):
                raise EngineError(f"{self.path}: cannot bind tensor {name!r}")

    def _select_profile(self, index: int) -> None:
        if index == self._profile and self._bindings:
            return
        ok = self._context.set_optimization_profile_async(index, int(self._stream))
        if not ok:
            raise EngineError(f"{self.path}: cannot select optimisation profile {index}")
        self._profile = index
        if self._bindings:
            self._bind_addresses()

    def _warm_up(self) -> None:
        """Run the opt shape of every profile once (kernels load, clocks rise)."""
        for p in range(self._engine.num_optimization_profiles):
            feeds = {
                spec.name: np.zeros(self._profile_shapes(spec.name)[p][1], dtype=spec.dtype)
                for spec in self._inputs
            }
            self.infer(feeds)

    # -- Engine protocol ------------------------------------------------------------------

    def _profile_for(self, feeds: dict[str, np.ndarray]) -> int:
        shapes = {spec.name: tuple(feeds[spec.name].shape) for spec in self._inputs}
        per_input = {name: self._profile_shapes(name) for name in shapes}
        ranges = [
            {name: per_input[name][p] for name in shapes}
            for p in range(self._engine.num_optimization_profiles)
        ]
        chosen = pick_profile(ranges, shapes, self._profile)
        if chosen is not None:
            return chosen
        raise EngineError(
            f"{self.path}: input shapes {shapes} are outside every optimisation profile; "
            "rebuild the plan with larger --batch or the cameras in use (--camera WxH)"
        )

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [s.name for s in self._inputs if s.name not in feeds]
        if missing:
            raise EngineError(f"{self.path}: missing inputs {missing}")
        self._select_profile(self._profile_for(feeds))
        cudart, h2d = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for spec in self._inputs:
            binding = self._bindings[spec.name]
            array = np.ascontiguousarray(feeds[spec.name], dtype=binding.dtype)
            if not self._context.set_input_shape(spec.name, array.shape):
                raise EngineError(
                    f"{self.path}: TensorRT rejected shape {array.shape} of {spec.name!r}"
                )
            binding.host[: array.size] = array.ravel()  # type: ignore[index]
            cuda_check(
                cudart,
                cudart.cudaMemcpyAsync(
                    binding.device_ptr, binding.host_ptr, array.nbytes, h2d, self._stream
                ),
                "cudaMemcpyAsync (to device)",
            )
        if not self._context.execute_async_v3(int(self._stream)):
            raise EngineError(f"{self.path}: TensorRT execution failed")
        return self._fetch_outputs()

    def _fetch_outputs(self) -> dict[str, np.ndarray]:
        cudart, d2h = self._cudart, self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        shapes = {}
        for spec in self._outputs:
            binding = self._bindings[spec.name]
            shape = tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
            shapes[spec.name] = shape
            nbytes = int(np.prod(shape)) * binding.dtype.itemsize
            cuda_check(
                cudart,
                cudart.cudaMemcpyAsync(
                    binding.host_ptr, binding.device_ptr, nbytes, d2h, self._stream
                ),
                "cudaMemcpyAsync (to host)",
            )
        cuda_check(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {
            name: self._bindings[name].host[: int(np.prod(shape))].reshape(shape).copy()  # type: ignore[index]
            for name, shape in shapes.items()
        }

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for binding in getattr(self, "_bindings", {}).values():
            binding.host = None
            if binding.device_ptr:
                cudart.cudaFree(binding.device_ptr)
            if binding.host_ptr:
                cudart.cudaFreeHost(binding.host_ptr)
        self._bindings = {}
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None


def pick_profile(
    ranges: list[dict[str, tuple[tuple[int, ...], ...]]],
    shapes: dict[str, tuple[int, ...]],
    current: int,
) -> int | None:
    """The optimisation profile for these input shapes, given each profile's (min, opt, max)
    per input: of the profiles that take them, the one with the smallest max (its kernels
    were chosen for shapes nearest to them; profiles may nest), the current one on a tie.
    None when no profile takes them."""
    fitting = [
        p
        for p, profile in enumerate(ranges)
        if all(_within(profile[name], shape) for name, shape in shapes.items())
    ]
    if not fitting:
        return None

    def size(p: int) -> int:
        return sum(int(np.prod(ranges[p][name][2])) for name in shapes)

    return min(fitting, key=lambda p: (size(p), p != current))


def _within(profile: tuple[tuple[int, ...], ...], shape: tuple[int, ...]) -> bool:
    lo, _, hi = profile
    return len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True))
