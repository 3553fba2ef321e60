"""Backend selection: one key per backend, each imported only when chosen."""

from __future__ import annotations

import math
import os
import site
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engines.base import Engine, EngineError

if TYPE_CHECKING:
    from engines.build import PlanRequest

BACKENDS = ("onnxruntime", "opencv", "openvino", "tensorrt", "torch")
CPU_BACKENDS = ("onnxruntime", "opencv", "openvino")  # the others run on a GPU when there is one
# engines.threads and the commands' --threads (0: all cores, ``cpu_threads``)
THREAD_BOUNDS = {"ge": 0, "le": 256}
# cgroup v2 (systemd's CPUQuota=, docker --cpus): this process's group, and where groups are
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_threads(setting: int) -> int:
    """The threads a user's threads setting asks for: 0 is all the cores this process may use
    (``usable_cpus``; to the engines, 0 is their own default instead)."""
    return setting if setting > 0 else usable_cpus()


def usable_cpus() -> int:
    """The cores this process may use: those it may run on (taskset, a cpuset), fewer when
    its cgroup's CPU quota is smaller (systemd's ``CPUQuota=200%``: 2). A thread per core
    of a 16-core box under a 2-core quota spent most of each period throttled."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not Linux)
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def cgroup_cpu_quota() -> float | None:
    """The CPU quota of this process's cgroup and those above it, in cores (the smallest),
    or None when there is none or it cannot be read: cgroup v2's ``cpu.max``, or v1's
    ``cpu.cfs_quota_us`` (Ubuntu 20.04, JetPack 5, hybrid hosts)."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, group = [*line.split(":", 2), "", ""][:3]
        if not controllers:  # v2 (0::PATH)
            quotas += _quotas(CGROUP_ROOT, group, _cpu_max)
        elif "cpu" in controllers.split(","):  # v1 (N:cpu,cpuacct:PATH)
            quotas += _quotas(CGROUP_ROOT / controllers, group, _cfs_quota)
    return min(quotas) if quotas else None


def _quotas(root: Path, group: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas of ``group`` and the groups above it, up to ``root`` (in a container, its
    own group is the root: the path it is told may not exist there)."""
    folder, found = root / group.lstrip("/"), []
    for level in (folder, *folder.parents):
        try:
            quota = read(level)
        except (OSError, ValueError):  # (no cpu controller at that level, or not a group)
            quota = None
        if quota is not None:
            found.append(quota)
        if level == root:
            break
    return found


def _cpu_max(group: Path) -> float | None:
    limit, period = (group / "cpu.max").read_text().split()[:2]
    return None if limit == "max" or float(period) <= 0 else float(limit) / float(period)


def _cfs_quota(group: Path) -> float | None:
    quota = float((group / "cpu.cfs_quota_us").read_text())
    period = float((group / "cpu.cfs_period_us").read_text())
    return None if quota <= 0 or period <= 0 else quota / period


def data_root() -> Path:
    """Where the shipped models/ and configs/ are: the checkout this package runs from (the
    README's editable install), else share/facewatch of the environment a wheel was
    installed into (``pip install .`` puts them there: pyproject's data-files)."""
    here = Path(__file__).resolve()
    checkout = here.parents[1]
    # PREFIX/lib/pythonX.Y/site-packages/engines/loader.py: the PREFIX it was installed into
    installed = [*here.parents[4:5], Path(sys.prefix), Path(site.getuserbase())]
    for root in [checkout, *(prefix / "share" / "facewatch" for prefix in installed)]:
        if (root / "models" / "mtcnn").is_dir():
            return root
    return checkout


def default_models_dir() -> Path:
    """$FACEWATCH_MODELS, else the shipped models/ folder (``data_root``)."""
    env = os.environ.get("FACEWATCH_MODELS")
    return Path(env) if env else data_root() / "models"


def default_facenet() -> Path:
    """The FaceNet of ``recognition.model: auto`` and of the commands without --model:
    facenet/facenet.onnx in ``default_models_dir()``."""
    return default_models_dir() / "facenet" / "facenet.onnx"


PRECISIONS = ("fp32", "bf16")  # bf16: the openvino backend, on CPUs with native bf16


def cpu_precision(backend: str, precision: str) -> tuple[str, str]:
    """(backend, precision) that a FaceNet-style model runs with: ``auto`` becomes bf16 for a
    CPU backend on a CPU with native bf16, else fp32; bf16 on a CPU backend means OpenVINO
    (the one that runs bf16). GPU backends and fp32 pass through unchanged."""
    if precision == "auto":
        from engines.openvino_backend import cpu_has_bf16

        precision = "bf16" if backend in CPU_BACKENDS and cpu_has_bf16() else "fp32"
    if precision == "bf16" and backend in CPU_BACKENDS:
        backend = "openvino"
    return backend, precision


def load_engine(
    model_path: str | Path,
    backend: str = "onnxruntime",
    threads: int = 0,
    precision: str = "fp32",
    trt_plans: PlanRequest | None = None,
) -> Engine:
    """Open ``model_path`` on ``backend``. A missing SDK or file is one clear EngineError.
    ``precision`` other than fp32 is for the openvino backend only. ``trt_plans`` says which
    cached TensorRT plan an ``.onnx`` opens (default: the newest; tensorrt backend only)."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and backend != "openvino":
        raise EngineError(f"precision {precision} needs the openvino backend, not {backend}")
    if backend == "onnxruntime":
        from engines.ort import OrtEngine

        return OrtEngine(model_path, threads=threads)
    if backend == "opencv":
        from engines.opencv_dnn import OpenCVEngine

        return OpenCVEngine(model_path, threads=threads)
    if backend == "openvino":
        from engines.openvino_backend import OpenVinoEngine

        return OpenVinoEngine(model_path, threads=threads, precision=precision)
    if backend == "tensorrt":
        # An .onnx path opens a cached plan (`facewatch engines build`); a .plan directly.
        from engines.trt_build import open_plan_for

        return open_plan_for(model_path, trt_plans)
    if backend == "torch":
        # The torch.export program (.pt2) saved next to the ONNX model; CUDA when available.
        from engines.torch_backend import from_environment

        return from_environment(model_path, threads=threads)
    raise EngineError(f"unknown engine backend {backend!r}; expected one of {', '.join(BACKENDS)}")
