"""The engine interface, tensor specs and the model sidecar (ModelMetadata)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)


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
        """Read the sidecar of ``model_path`` (``x.onnx`` -> ``x.json``)."""
        path = cls.sidecar_path(model_path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            model = Path(model_path)
            if not model.exists() and not model.parent.is_dir():
                raise EngineError(f"{model.parent}: no such folder") from None
            if not model.exists():
                raise EngineError(f"{model}: no such model file") from None
            if model.suffix in (".pt", ".pth", ".ckpt"):
                raise EngineError(
                    f"{model}: a training checkpoint, not a model facewatch runs: export it "
                    f"first (facewatch train export {model} --out DIR/facenet.onnx)"
                ) from None
            raise EngineError(f"{path}: model sidecar missing (every model needs one)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise EngineError(f"{path}: cannot read model sidecar: {exc}") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise EngineError(f"{path}: unknown sidecar keys {unknown}")
        try:
            meta = cls(**raw)
        except TypeError as exc:
            raise EngineError(f"{path}: bad sidecar: {exc}") from None
        if meta.input_size_hw is not None:
            meta.input_size_hw = (int(meta.input_size_hw[0]), int(meta.input_size_hw[1]))
        return meta

    def save(self, model_path: str | Path) -> Path:
        path = self.sidecar_path(model_path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_hint(extra: str) -> str:
    """The pip command that adds facewatch's ``extra`` where it runs: an editable install of
    its checkout (the README's), else the package's."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return f"pip install -e '{checkout}[{extra}]'"
    return f"pip install 'facewatch[{extra}]'"


def sync_folder(folder: Path) -> None:
    """Make the names in ``folder`` durable (a rename into it, across a power cut)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
