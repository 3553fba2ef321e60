"""The cache of TensorRT plans: where each lives, what it was built from, which to open.

Plans live in a cache folder as ``<model>-<key16>.plan`` with a ``.json`` manifest beside
each; the key is the sha256 of the ONNX bytes, the TensorRT version, the GPU (name and
compute capability) and the build options, so a plan is rebuilt only when one of those
changed. Pure functions, tested on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.base import file_sha256, sync_folder
from engines.build import BuildError, BuildOptions

logger = logging.getLogger(__name__)

CACHE_FORMAT = 3  # bump when the plan layout changes (2: P-Net regions, 3: P-Net down to 12)


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]

    def slug(self) -> str:
        clean = "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")
        return f"{clean}-sm{self.compute_capability[0]}{self.compute_capability[1]}"


def cache_key(onnx_sha256: str, trt_version: str, gpu: GpuInfo, options: BuildOptions) -> str:
    """sha256 over everything a plan depends on; equal inputs give equal keys."""
    payload = {
        "format": CACHE_FORMAT,
        "onnx_sha256": onnx_sha256,
        "tensorrt": trt_version,
        "gpu": gpu.name,
        "compute_capability": list(gpu.compute_capability),
        "options": options.key_fields(),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    """$FACEWATCH_ENGINE_CACHE, else $XDG_CACHE_HOME/facewatch/engines (~/.cache/...)."""
    env = os.environ.get("FACEWATCH_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facewatch" / "engines"


@dataclass(frozen=True)
class CachePaths:
    plan: Path
    manifest: Path
    timing_cache: Path
    calibration_cache: Path


def cache_paths(
    cache_dir: str | Path, model_stem: str, key: str, trt_version: str, gpu: GpuInfo
) -> CachePaths:
    """Where a plan, its manifest and the shared timing / calibration caches live."""
    root = Path(cache_dir)
    plan = root / f"{model_stem}-{key[:16]}.plan"
    return CachePaths(
        plan=plan,
        manifest=plan.with_suffix(".json"),
        timing_cache=root / f"timing-trt{trt_version}-{gpu.slug()}.cache",
        calibration_cache=root / f"{model_stem}-{key[:16]}.calib",
    )


@dataclass
class Manifest:
    """What a cached plan was built from (the ``.json`` beside it)."""

    model: str
    onnx_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: list[int]
    options: dict[str, Any]
    profiles: list[dict[str, Any]] = field(default_factory=list)
    built_at: float = 0.0
    build_seconds: float = 0.0
    plan_sha256: str = ""  # what was written: a plan that differs is damaged (older: unknown)


def damaged(plan: Path) -> bool:
    """Whether ``plan`` is not the file its manifest says was written (a power cut, a
    failing disk); False when that cannot be told (no manifest, or an older one)."""
    try:
        written = json.loads(plan.with_suffix(".json").read_text()).get("plan_sha256", "")
        return bool(written) and file_sha256(plan) != written
    except (OSError, ValueError, AttributeError):
        return False


def read_manifests(cache_dir: str | Path) -> list[tuple[Path, Manifest]]:
    """Every cached plan that has a readable manifest, newest first."""
    found = []
    for path in sorted(Path(cache_dir).glob("*.json")):
        plan = path.with_suffix(".plan")
        try:
            manifest = _manifest(path)
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("%s: unreadable manifest skipped: %s", path, exc)
            continue
        if plan.is_file():
            found.append((plan, manifest))
    return sorted(found, key=lambda item: -item[1].built_at)


def _manifest(path: Path) -> Manifest:
    return Manifest(**json.loads(path.read_text()))


def unreadable_plans(cache_dir: str | Path) -> list[Path]:
    """The plans whose manifest is there but cannot be read (cut short, written over):
    ``read_manifests`` skips them, so only ``engines prune --all`` finds them to delete."""
    found = []
    for path in sorted(Path(cache_dir).glob("*.json")):
        try:
            _manifest(path)
        except (OSError, ValueError, TypeError):
            if path.with_suffix(".plan").is_file():
                found.append(path.with_suffix(".plan"))
    return found


def stale_plans(
    cache_dir: str | Path, trt_version: str, gpu: GpuInfo, keep: set[Path] | None = None
) -> list[Path]:
    """The cached plans this machine will not open again: those built for another TensorRT
    version or GPU, and with ``keep`` (the plans a config opens) every other one too."""
    kept = None if keep is None else {p.resolve() for p in keep}
    return [
        plan
        for plan, manifest in read_manifests(cache_dir)
        if (manifest.tensorrt, manifest.gpu) != (trt_version, gpu.name)
        or (kept is not None and plan.resolve() not in kept)
    ]


def write_durably(path: Path, data: bytes) -> None:
    """``data`` at ``path``, whole or not at all, also across a power cut: written beside it
    under this process's name (two builds of one plan do not mix), flushed to the disk,
    renamed, and the rename flushed."""
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with scratch.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        scratch.replace(path)
    finally:
        scratch.unlink(missing_ok=True)
    sync_folder(path.parent)


DEBRIS_AGE_S = 600.0  # a plan this old with no manifest is no build finishing its writes


def debris(
    cache_dir: str | Path, trt_version: str | None = None, gpu: GpuInfo | None = None
) -> list[Path]:
    """The files of ``cache_dir`` that no plan will use: the scratch files of writes that
    were cut (their process gone), plans without a manifest (listed nowhere: older than
    DEBRIS_AGE_S), manifests and calibration caches without their plan, and timing caches
    of another TensorRT version or GPU (with ``trt_version`` and ``gpu``; every one without)."""
    root = Path(cache_dir)
    found = [p for p in root.glob("*.tmp") if not _running(p.name.split(".")[-2])]
    for plan in root.glob("*.plan"):
        if not plan.with_suffix(".json").is_file() and _age_s(plan) > DEBRIS_AGE_S:
            found.append(plan)
    for suffix in (".json", ".calib"):
        found += [p for p in root.glob(f"*{suffix}") if not p.with_suffix(".plan").is_file()]
    current = (
        None
        if trt_version is None or gpu is None
        else f"timing-trt{trt_version}-{gpu.slug()}.cache"
    )
    found += [p for p in root.glob("timing-*.cache") if p.name != current]
    return sorted(found)


def _running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's
        return True
    return True


def _age_s(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def remove_plan(plan: Path) -> int:
    """Delete a cached plan with its manifest and calibration cache; the bytes freed."""
    freed = 0
    for path in (plan, plan.with_suffix(".json"), plan.with_suffix(".calib")):
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
    return freed


def cached_plan(
    onnx_path: str | Path,
    options: BuildOptions,
    cache_dir: str | Path,
    trt_version: str,
    gpu: GpuInfo,
) -> Path | None:
    """The plan built from this ONNX file with exactly these options for this TensorRT and
    GPU (what ``engines.trt_build.build_engine`` writes), or None."""
    key = cache_key(file_sha256(onnx_path), trt_version, gpu, options)
    plan = cache_paths(cache_dir, Path(onnx_path).stem, key, trt_version, gpu).plan
    return plan if plan.is_file() else None


def find_cached_plan(
    onnx_path: str | Path, cache_dir: str | Path, trt_version: str, gpu: GpuInfo
) -> Path:
    """The newest plan built from this ONNX file for this TensorRT and GPU, whatever its
    options (the one-off commands; the daemon asks for its own with a PlanRequest)."""
    sha = file_sha256(onnx_path)
    for plan, manifest in read_manifests(cache_dir):
        if (manifest.onnx_sha256, manifest.tensorrt, manifest.gpu) == (sha, trt_version, gpu.name):
            return plan
    raise BuildError(
        f"{onnx_path}: no TensorRT plan in {cache_dir} for TensorRT {trt_version} on {gpu.name}; "
        f"build one with `facewatch engines build {onnx_path} --cache-dir {cache_dir}`"
    )
