"""TensorRT builder: what a plan is built with (options, optimisation profiles, precision)
and which plans the daemon asks for (``PlanRequest``).

The profile and option logic are pure functions (tested on the CPU): this module needs no
TensorRT; ``engines.trt_build.build_engine`` compiles, into the cache of
``engines.plan_cache``.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from engines import boxes as bx
from engines.base import (
    CROPS_PER_CALL,
    DEFAULT_MAX_BATCH,
    EngineError,
    ModelMetadata,
)
from engines.mtcnn import MTCNNConfig

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_BATCH = (1, 8, 32)
DEFAULT_WORKSPACE_BYTES = 1 << 30
MIN_WORKSPACE_BYTES = 1 << 20
PNET_PROFILE_GROUPS = 2  # profiles for P-Net: large levels, small levels


class BuildError(EngineError):
    """An engine cannot be built: bad options, a parser error, or a failed build."""


@dataclass(frozen=True)
class BuildOptions:
    """What a plan is built with. ``camera_hw`` (P-Net only) are the configured camera
    resolutions as (height, width); they and the detector settings imply P-Net's input sizes."""

    precision: str = "fp32"
    batch: tuple[int, int, int] = DEFAULT_BATCH
    camera_hw: tuple[tuple[int, int], ...] = ()
    min_face_size: float = MTCNNConfig.min_face_size
    scale_factor: float = MTCNNConfig.scale_factor
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    calib_dir: str | None = None
    calib_images: int = 256

    def __post_init__(self) -> None:
        # Canonical form: the same cameras in any order (or repeated) give the same key.
        cams = tuple(sorted({(int(h), int(w)) for h, w in self.camera_hw}))
        object.__setattr__(self, "camera_hw", cams)
        object.__setattr__(self, "batch", tuple(int(b) for b in self.batch))
        validate_options(self)

    def key_fields(self) -> dict[str, Any]:
        """The options as JSON-able values (what the cache key and manifest record)."""
        fields = asdict(self)
        fields["camera_hw"] = [list(hw) for hw in self.camera_hw]
        fields["batch"] = list(self.batch)
        if self.calib_dir is not None:
            fields["calib_dir"] = str(Path(self.calib_dir).resolve())
        return fields


def camera_size_hw(text: str) -> tuple[int, int]:
    """A camera size written WIDTHxHEIGHT (1920x1080 or 1920X1080) as (height, width), as
    ``engines.tensorrt.camera_sizes`` and ``--camera`` take it; ValueError for anything else
    or a side under P-Net's 12 pixels."""
    match = re.fullmatch(r"([0-9]+)[xX]([0-9]+)", text)
    if match is None or min(int(side) for side in match.groups()) < bx.PNET_CELL:
        raise ValueError(
            f"expected WIDTHxHEIGHT of at least {bx.PNET_CELL}x{bx.PNET_CELL}, e.g. 1920x1080, "
            f"got {text!r}"
        )
    return int(match.group(2)), int(match.group(1))


def validate_options(options: BuildOptions) -> None:
    """Raise BuildError with the option's name and what was expected."""
    if options.precision not in PRECISIONS:
        raise BuildError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}"
        )
    batch = options.batch
    if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise BuildError(f"batch must be MIN OPT MAX with 1 <= MIN <= OPT <= MAX, got {batch}")
    for h, w in options.camera_hw:
        if min(h, w) < bx.PNET_CELL:
            raise BuildError(f"camera size {w}x{h} is too small: P-Net needs at least 12x12")
    try:  # the detector's own rule
        MTCNNConfig(min_face_size=options.min_face_size, scale_factor=options.scale_factor)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    if options.workspace_bytes < MIN_WORKSPACE_BYTES:
        raise BuildError(
            f"workspace_bytes must be >= {MIN_WORKSPACE_BYTES} (1 MiB), got {options.workspace_bytes}"
        )
    if options.precision == "int8" and not options.calib_dir:
        raise BuildError("int8 needs calibration images: give calib_dir (--calib-dir DIR)")
    if options.precision != "int8" and options.calib_dir:
        raise BuildError(f"calib_dir is only used with int8, not {options.precision}")
    if options.calib_images < 1:
        raise BuildError(f"calib_images must be >= 1, got {options.calib_images}")


# -- optimisation profiles --------------------------------------------------------------


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimisation profile for one input tensor (full NCHW shapes)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def covers(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )


def batch_profile(
    name: str, sample_shape: tuple[int, ...], batch: tuple[int, int, int]
) -> ShapeProfile:
    """A profile over the batch axis only (R-Net, O-Net, FaceNet): ``sample_shape`` is CHW."""
    lo, opt, hi = batch
    return ShapeProfile(name, (lo, *sample_shape), (opt, *sample_shape), (hi, *sample_shape))


def pnet_level_sizes(
    camera_hw: tuple[tuple[int, int], ...], min_face_size: float, scale_factor: float
) -> list[tuple[int, int]]:
    """Every P-Net input size (h, w) the detector asks for at these camera sizes, largest first."""
    sizes = {
        bx.scaled_size_hw(hw, scale)
        for hw in camera_hw
        for scale in bx.pyramid_scales(hw, min_face_size, scale_factor)
    }
    return sorted(sizes, key=lambda s: (-s[0] * s[1], s))


def pnet_profiles(
    name: str,
    camera_hw: tuple[tuple[int, int], ...],
    batch: tuple[int, int, int],
    min_face_size: float,
    scale_factor: float,
    groups: int = PNET_PROFILE_GROUPS,
) -> list[ShapeProfile]:
    """Profiles that together take every P-Net input up to the largest pyramid level of the
    cameras, and last the regions searched around known faces (``pnet_region_profile``).

    Levels are split by area into ``groups`` runs (the large levels, where the time goes,
    get a profile of their own); each profile's opt is its largest level and its max the
    bounding box of its levels. Every profile reaches down to P-Net's 12 x 12 window, so
    levels that fall between the runs are taken too: those of a camera with a larger
    ``min_face_size`` (a per-camera override), another aspect ratio, or a smaller frame
    than the ones given.
    """
    sizes = pnet_level_sizes(camera_hw, min_face_size, scale_factor)
    if not sizes:
        raise BuildError("P-Net needs camera sizes (--camera WxH) to size its profiles")
    groups = max(1, min(groups, len(sizes)))
    bounds = [round(i * len(sizes) / groups) for i in range(groups + 1)]
    cell = bx.PNET_CELL
    profiles = []
    for a, b in itertools.pairwise(bounds):
        part = sizes[a:] if a == 0 else sizes[a:b]  # the first takes every level
        hs, ws = [s[0] for s in part], [s[1] for s in part]
        profiles.append(
            ShapeProfile(
                name,
                (batch[0], 3, cell, cell),
                (batch[1], 3, sizes[a][0], sizes[a][1]),
                (batch[2], 3, max(hs), max(ws)),
            )
        )
    return [*profiles, pnet_region_profile(name, batch)]


def pnet_region_profile(name: str, batch: tuple[int, int, int]) -> ShapeProfile:
    """P-Net's calls in the search around known faces (``detection.full_scan_every`` > 1):
    square regions at each ``bx.ROI_CANVAS`` size, as many per call as the other profiles
    take frames (MTCNN splits a batch's regions to the plan's ``max_batch``)."""
    lo, hi = min(bx.ROI_CANVAS), max(bx.ROI_CANVAS)
    mid = sorted(bx.ROI_CANVAS)[len(bx.ROI_CANVAS) // 2]
    return ShapeProfile(name, (batch[0], 3, lo, lo), (batch[1], 3, mid, mid), (batch[2], 3, hi, hi))


def default_batch(meta: ModelMetadata) -> tuple[int, int, int]:
    """The batch profile (min, opt, max) that covers what facewatch asks of a model: P-Net
    one call per batch of frames, R-Net / O-Net up to ``CROPS_PER_CALL`` face candidates per
    call, FaceNet up to ``DEFAULT_MAX_BATCH`` faces per call."""
    if meta.input_size_hw is None:  # P-Net: frames per batch
        return DEFAULT_BATCH
    if meta.kind == "facenet":
        return (1, 16, DEFAULT_MAX_BATCH)
    return (1, 128, CROPS_PER_CALL)


def model_profiles(
    meta: ModelMetadata, input_name: str, options: BuildOptions
) -> list[ShapeProfile]:
    """The profiles for a model: P-Net (dynamic H/W) from the cameras, others by batch."""
    if meta.input_size_hw is None:
        return pnet_profiles(
            input_name,
            options.camera_hw,
            options.batch,
            options.min_face_size,
            options.scale_factor,
        )
    return [batch_profile(input_name, (3, *meta.input_size_hw), options.batch)]


# -- progress of a build ---------------------------------------------------------------


class BuildProgress:
    """What TensorRT's builder reports through its progress monitor (phases, each of some
    steps, nested), shown while a plan builds (minutes): a bar per phase on a terminal,
    else a log line as each top-level phase starts and ends (the daemon's journal).
    TensorRT calls it from its own threads."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.label, self.stream = label, stream
        self._lock = threading.Lock()
        self._depth: dict[str, int] = {}
        self._bars: dict[str, tqdm[Any]] = {}

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        with self._lock:
            depth = self._depth.get(parent, -1) + 1 if parent else 0
            self._depth[name] = depth
            if self.stream is not None:
                self._bars[name] = tqdm(
                    total=steps,
                    desc=f"{self.label}: {name}",
                    unit="step",
                    position=depth,
                    leave=depth == 0,
                    file=self.stream,
                )
            elif depth == 0:
                logger.info("%s: %s (%d steps)", self.label, name, steps)

    def step_complete(self, name: str, step: int) -> bool:
        """Step ``step`` (from 0) of ``name`` is done; True: go on (never cancels)."""
        with self._lock:
            bar = self._bars.get(name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
        return True

    def phase_finish(self, name: str) -> None:
        with self._lock:
            bar = self._bars.pop(name, None)
            if bar is not None:
                bar.close()
            elif self._depth.get(name) == 0:
                logger.info("%s: %s done", self.label, name)
            self._depth.pop(name, None)


@dataclass(frozen=True)
class PlanRequest:
    """The plans a long-running caller (the daemon) opens with the tensorrt backend: for each
    ONNX model, the one built with ``options_for(its metadata)``, so that a change of cameras,
    face size, batch or precision gives a plan that fits it rather than an old one.

    A missing plan is built first when ``build`` is set (``on_build`` is told before each
    build: minutes), else it is a BuildError that names ``build_command``.
    """

    precision: str = "fp16"
    camera_hw: tuple[tuple[int, int], ...] = ()  # P-Net: every frame size up to these
    min_face_size: float = MTCNNConfig.min_face_size
    scale_factor: float = MTCNNConfig.scale_factor
    frames_per_call: int = DEFAULT_BATCH[1]  # P-Net's opt batch (the daemon's max_batch)
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    calib_dir: str | None = None
    calib_images: int = 256
    cache_dir: str | None = None  # None: default_cache_dir()
    build: bool = True
    build_command: str = "facewatch engines build --config CONFIG"
    on_build: Callable[[Path], None] | None = field(default=None, compare=False)

    def options_for(self, meta: ModelMetadata) -> BuildOptions:
        """P-Net: the cameras, face size and frames per call; the others: their default
        batch (what ``facewatch engines build MODEL`` gives them at this precision). int8 is
        for P-Net only, which sees whole frames as the calibration images are; the others
        see face crops, and run fp16."""
        common: dict[str, Any] = {"workspace_bytes": self.workspace_bytes}
        if meta.input_size_hw is not None:
            precision = "fp16" if self.precision == "int8" else self.precision
            return BuildOptions(precision=precision, batch=default_batch(meta), **common)
        common["precision"] = self.precision
        if self.precision == "int8":
            common.update(calib_dir=self.calib_dir, calib_images=self.calib_images)
        frames = self.frames_per_call
        return BuildOptions(
            batch=(1, frames, max(frames, DEFAULT_BATCH[2])),
            camera_hw=self.camera_hw,
            min_face_size=self.min_face_size,
            scale_factor=self.scale_factor,
            **common,
        )

    def missing(self, onnx_path: str | Path, options: BuildOptions, cache_dir: str | Path) -> str:
        """Why a plan cannot be opened when it is missing and ``build`` is off."""
        summary = f"{options.precision}, batch {'/'.join(map(str, options.batch))}"
        if options.camera_hw:
            cams = ", ".join(f"{w}x{h}" for h, w in options.camera_hw)
            summary += f", cameras {cams}, min_face_size {options.min_face_size:g}"
        return (
            f"{onnx_path}: no TensorRT plan built for these settings ({summary}) in "
            f"{cache_dir}; build it with `{self.build_command}`"
        )
