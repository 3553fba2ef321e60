"""The engine interface, tensor specs and the model sidecar (ModelMetadata)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import operator
import os
import reprlib
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

# Arrays by the dtype they really hold, for the signatures (numpy.typing.NDArray); where any
# dtype comes (an engine's outputs, a caller's array) the signature keeps np.ndarray.
Image = NDArray[np.uint8]
"""8-bit BGR pixels: one HxWx3 image (``engines.images.as_bgr8``) or a stack of crops."""
Floats = NDArray[np.float32]
"""What the detector and FaceNet give: boxes, scores, landmarks, embeddings; network inputs."""
Indices = NDArray[np.int64]
"""Rows kept (NMS), the frame of each candidate, integer crop windows."""
AnyFloats = NDArray[np.floating[Any]]
"""Boxes or points in float32 (the detector's) or float64 (the tracks', a config's)."""


class EngineError(RuntimeError):
    """A model could not be loaded or run; the message names the file and the reason."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an engine. Dynamic dimensions are None."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


@runtime_checkable
class Engine(Protocol):
    """What every backend provides: named tensors in, named tensors out."""

    @property
    def inputs(self) -> list[TensorSpec]: ...

    @property
    def outputs(self) -> list[TensorSpec]: ...

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


# What the engines' callers send per call where the model's batch axis is dynamic; TensorRT
# plans are sized for it (engines.build.default_batch).
CROPS_PER_CALL = 1024  # R-Net / O-Net face candidates (engines.mtcnn)
DEFAULT_MAX_BATCH = 64  # faces (engines.facenet)


def batch_limit(engine: Engine, wanted: int) -> int:
    """``wanted``, or less where the engine takes at most a smaller batch: backends whose
    inputs stop at some batch size below what callers may send (a TensorRT plan, at the
    end of its profiles) say so with a ``max_batch`` attribute; callers split to it."""
    limit = getattr(engine, "max_batch", None)
    return max(1, min(wanted, int(limit))) if limit else wanted


def padded_batch(engine: Engine, rows: int) -> int:
    """The batch a call of ``rows`` rows is padded to: the next power of two up to 64, then
    the next multiple of 64, within the engine's limit. CPU runtimes keep memory for each
    input shape they meet (OpenVINO: 3.5 GB once R-Net had met 1000 batch sizes, as a day of
    a busy camera's candidate counts would be); a few sizes keep it bounded, for a little
    work on the padding."""
    if rows <= 0:
        return rows
    size = 1 << (rows - 1).bit_length() if rows <= 64 else -(-rows // 64) * 64
    return max(rows, batch_limit(engine, size))


def input_limits(engine: Engine) -> list[tuple[int, ...]] | None:
    """The largest shapes of an engine's first input, one per optimisation profile, where
    there is a limit (a TensorRT plan says so with a ``max_input_shapes`` attribute); None
    when the engine takes any shape."""
    limits = getattr(engine, "max_input_shapes", None)
    return [tuple(int(d) for d in shape) for shape in limits] if limits else None


class SpecsFromLoad:
    """For backends: ``inputs`` / ``outputs`` are the specs found when the model was loaded
    (set ``self._inputs`` and ``self._outputs`` in ``__init__``)."""

    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs


@dataclass
class ModelMetadata:
    """The JSON sidecar written next to every model file (`<model>.json`).

    Preprocessing constants come from here, never from guessing:
    ``input = (pixel[channel_order] - mean) / std`` in NCHW layout.
    """

    name: str
    kind: str  # "mtcnn-pnet" | "mtcnn-rnet" | "mtcnn-onet" | "facenet"
    input_size_hw: tuple[int, int] | None  # None: dynamic (P-Net)
    mean: float = 127.5
    std: float = 128.0
    channel_order: str = "RGB"
    opset: int = 17
    embedding_size: int | None = None
    outputs: list[str] = field(default_factory=list)
    training_data: str = ""
    source: str = ""
    license: str = ""
    lfw_accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sidecar_path(cls, model_path: str | Path) -> Path:
        return Path(model_path).with_suffix(".json")

    @classmethod
    def load(cls, model_path: str | Path) -> ModelMetadata:
        """Read the sidecar of ``model_path`` (``x.onnx`` -> ``x.json``); EngineError naming
        the file for one that is missing, unreadable, or holds a key of the wrong kind."""
        path = cls.sidecar_path(model_path)
        try:
            raw = read_json(path)
        except FileNotFoundError:
            raise _no_sidecar(Path(model_path), path) from None
        except OSError as exc:
            raise EngineError(f"{path}: cannot read model sidecar: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise EngineError(f"{path}: cannot read model sidecar: {exc}") from None
        if not isinstance(raw, dict):
            raise EngineError(f"{path}: a model sidecar is a JSON object, got {brief(raw)}")
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise EngineError(f"{path}: unknown sidecar keys {unknown}")
        for key, value in raw.items():
            check, expected = SIDECAR_RULES[key]
            if not check(value):
                raise EngineError(f"{path}: sidecar {key}: expected {expected}, got {brief(value)}")
        try:
            meta = cls(**raw)
        except TypeError as exc:  # a key that must be there is not
            raise EngineError(f"{path}: bad sidecar: {exc}") from None
        if meta.input_size_hw is not None:
            meta.input_size_hw = (int(meta.input_size_hw[0]), int(meta.input_size_hw[1]))
        return meta

    def save(self, model_path: str | Path) -> Path:
        path = self.sidecar_path(model_path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def _no_sidecar(model: Path, path: Path) -> EngineError:
    """Why a model's sidecar ``path`` is not there, in the user's terms."""
    if not model.exists() and not model.parent.is_dir():
        return EngineError(f"{model.parent}: no such folder")
    if not model.exists():
        return EngineError(f"{model}: no such model file")
    if model.suffix in (".pt", ".pth", ".ckpt"):
        return EngineError(
            f"{model}: a training checkpoint, not a model facewatch runs: export it "
            f"first (facewatch train export {model} --out DIR/facenet.onnx)"
        )
    return EngineError(f"{path}: model sidecar missing (every model needs one)")


MAX_INPUT_SIDE = 4096  # pixels; face models take 12 (P-Net's cell) to a few hundred
MIN_STD = 1e-3  # pixels are divided by it: 0 (or next to it) makes inf and NaN embeddings


def finite_number(value: object) -> float | None:
    """``value`` as a float when it is a finite JSON number (an int or a float, not a bool
    and not an integer too large for a float); else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


# A setting's bounds in pydantic's words (``Field(**bounds)``), so that the daemon's config
# and the command lines' options take one rule from where it is defined.
BOUND_SIGNS = {
    "ge": (">=", operator.ge),
    "gt": (">", operator.gt),
    "le": ("<=", operator.le),
    "lt": ("<", operator.lt),
}


def within(value: float, bounds: Mapping[str, float]) -> bool:
    """Whether ``value`` keeps ``bounds`` ({"ge": 12, "le": 1000}); NaN never does."""
    return all(BOUND_SIGNS[key][1](value, limit) for key, limit in bounds.items())


def bounds_text(bounds: Mapping[str, float]) -> str:
    """``bounds`` in words: '>= 12 and <= 1000'."""
    return " and ".join(f"{BOUND_SIGNS[key][0]} {limit:g}" for key, limit in bounds.items())


def is_count(value: object, low: int = 1, high: int | None = None) -> bool:
    """A JSON integer (not a bool) in [low, high]."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and low <= value
        and (high is None or value <= high)
    )


def _in_range(value: object, low: float, high: float) -> bool:
    number = finite_number(value)
    return number is not None and low <= number <= high


def _is_size_hw(value: object) -> bool:
    return value is None or (
        isinstance(value, list)
        and len(value) == 2
        and all(is_count(side, 1, MAX_INPUT_SIDE) for side in value)
    )


# what each sidecar key must hold: (check, what it expects, in words)
SIDECAR_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str), "text"),
    "kind": (lambda v: isinstance(v, str), "text"),
    "input_size_hw": (_is_size_hw, f"null or [height, width] of 1 to {MAX_INPUT_SIDE} pixels"),
    "mean": (lambda v: _in_range(v, 0.0, 255.0), "a number of 0 to 255 (a pixel value)"),
    "std": (lambda v: _in_range(v, MIN_STD, math.inf), f"a number of at least {MIN_STD}"),
    "channel_order": (lambda v: isinstance(v, str), "text (RGB or BGR)"),
    "opset": (is_count, "a whole number of at least 1"),
    "embedding_size": (lambda v: v is None or is_count(v), "null or a whole number >= 1"),
    "outputs": (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "names"),
    "training_data": (lambda v: isinstance(v, str), "text"),
    "source": (lambda v: isinstance(v, str), "text"),
    "license": (lambda v: isinstance(v, str), "text"),
    "lfw_accuracy": (lambda v: v is None or _in_range(v, 0.0, 1.0), "null or a number 0 to 1"),
    "extra": (lambda v: isinstance(v, dict), "an object"),
}


def brief(value: object) -> str:
    """``value`` for a message: its repr, cut short (a hostile file's value can be huge)."""
    return reprlib.repr(value)


def parse_json(text: str) -> Any:
    """The value of JSON ``text``; ValueError saying what is wrong for anything else, also for
    nesting too deep for the parser and integers of more than 4300 digits."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json(path: str | Path) -> Any:
    """The JSON value in the UTF-8 file at ``path``; OSError when it cannot be read,
    ValueError (what is wrong, ``parse_json``) when it is not UTF-8 JSON."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None
    return parse_json(text)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def progress_wanted(no_progress: bool = False) -> bool:
    """Progress bars: on a terminal, unless --no-progress. In a pipe, a log or cron's mail a
    bar is one long line of carriage-return redraws, mixed with the messages."""
    return not no_progress and sys.stderr.isatty()


def install_hint(extra: str) -> str:
    """The pip command that adds facewatch's ``extra`` where it runs: an editable install of
    its checkout (the README's), else the package's."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return f"pip install -e '{checkout}[{extra}]'"
    return f"pip install 'facewatch[{extra}]'"


def sdk_import_error(backend: str, package: str, exc: ImportError) -> EngineError:
    """What a backend whose package did not import says: absent (install it), or installed
    but broken (one built for NumPy 1 beside NumPy 2, a missing library), with the reason."""
    if isinstance(exc, ModuleNotFoundError) and exc.name == package:
        return EngineError(
            f"the {backend} backend needs the {package} package (a facewatch dependency): "
            f"pip install {package}"
        )
    return EngineError(
        f"the {backend} backend cannot import {_installed(package)}, installed beside numpy "
        f"{np.__version__} ({_import_reason(exc, package)}): pip install -U {package}"
    )


def _installed(package: str) -> str:
    """``package`` and its installed version, as pip names it (just the name when pip's
    metadata is elsewhere, e.g. NVIDIA's onnxruntime-gpu)."""
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


def _import_reason(exc: ImportError, package: str) -> str:
    """The ImportError's words; where it has none (onnxruntime 1.17 beside NumPy 2 raises an
    empty one, after printing the reason), the line of the package that raised it."""
    if str(exc):
        return f"{type(exc).__name__}: {exc}"
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = ""
    if last:
        file = last[0].filename
        file = file[file.rfind(f"/{package}/") + 1 :] if f"/{package}/" in file else file
        where = f" at {file}:{last[0].lineno}"
    return f"{type(exc).__name__} with no message{where}; the lines printed above say why"


def sync_folder(folder: Path) -> None:
    """Make the names in ``folder`` durable (a rename into it, across a power cut)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
