"""FaceNet embeddings on any engine: aligned face crops in, L2-normalised embeddings out.

Everything the model needs to see a face the way it was trained comes from its sidecar
(``ModelMetadata``):

- ``input_size_hw``, ``channel_order``; ``mean`` / ``std`` for a fixed ``(x - mean) / std``, or
  ``extra["prewhiten"]`` for the original project's per-image standardisation;
- ``extra["alignment"]`` (``"margin"``: the box grown by ``extra["margin"]`` pixels, as
  ``align_dataset_mtcnn`` cuts it; ``"similarity"``: the 5-landmark warp onto the reference
  template, or onto ``extra["landmarks"]``, the model's own), both from ``engines.align`` so
  that training and inference cut faces the same way.

Crops are uint8 BGR (the engines' image convention: what ``read_image`` and cameras give).
Distances between embeddings are squared Euclidean on the unit vectors (0 .. 4), the scale
the training module's LFW thresholds are on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.align import align_similarity, crop_with_margin, template_of
from engines.base import (
    DEFAULT_MAX_BATCH,
    Engine,
    EngineError,
    Floats,
    ModelMetadata,
    batch_limit,
    brief,
    file_sha256,
    finite_number,
    is_count,
)
from engines.loader import cpu_precision, load_engine
from engines.mtcnn import FrameDetections

if TYPE_CHECKING:
    from engines.build import PlanRequest

logger = logging.getLogger(__name__)

ALIGNMENTS = ("margin", "similarity")

FacePick = tuple[np.ndarray, FrameDetections, int]
"""One face to embed: the frame, its detections, and which of them."""


def _l2_normalise(x: np.ndarray) -> Floats:
    x = np.asarray(x, dtype=np.float32)
    unit: Floats = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return unit


def prewhiten(images: np.ndarray) -> Floats:
    """The original FaceNet's per-image standardisation of (N, H, W, C) pixels:
    ``(x - mean) / max(std, 1 / sqrt(pixels))`` over each whole image."""
    x = images.astype(np.float32)
    axes = (1, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    floor = np.float32(1.0 / np.sqrt(float(np.prod(x.shape[1:]))))
    whitened: Floats = ((x - mean) / np.maximum(std, floor)).astype(np.float32)
    return whitened


class FaceNet:
    """Face embedding model adapter. ``embed(crops_bgr)`` -> (N, D) unit vectors.

    ``flip=True`` also embeds each crop mirrored and returns the normalised mean of the two.
    ``model_id`` names the model (and flip setting) that produced an embedding, so stores of
    embeddings can refuse to mix models; ``FaceNet.load`` derives it from the file's hash.
    """

    def __init__(
        self,
        engine: Engine,
        meta: ModelMetadata,
        model_id: str = "",
        flip: bool = False,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        _check_metadata(meta, "model")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.engine, self.meta, self.flip = engine, meta, flip
        self.input_name = engine.inputs[0].name
        names = [o.name for o in engine.outputs]
        self.output_name = (
            meta.outputs[0] if meta.outputs and meta.outputs[0] in names else names[0]
        )
        fixed = engine.inputs[0].shape[0]
        self.fixed_batch: int | None = fixed if isinstance(fixed, int) and fixed > 0 else None
        self.max_batch = self.fixed_batch or batch_limit(engine, max_batch)
        self.image_size_hw: tuple[int, int] = meta.input_size_hw  # type: ignore[assignment]
        self.alignment = str(meta.extra.get("alignment", "margin"))
        self.margin = int(meta.extra.get("margin", 32))
        self.runs_as = "fp32"  # its arithmetic and backend, for the logs (``load`` says)
        self.template = template_of(meta.extra, meta.input_size_hw[0])  # type: ignore[index]
        self.prewhiten = bool(meta.extra.get("prewhiten", False))
        self.embedding_size = int(meta.embedding_size or engine.outputs[0].shape[-1] or 0)
        self.model_id = embeddings_id(model_id or meta.name, flip)

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        backend: str = "onnxruntime",
        threads: int = 0,
        flip: bool = False,
        max_batch: int = DEFAULT_MAX_BATCH,
        precision: str = "fp32",
        trt_plans: PlanRequest | None = None,
    ) -> FaceNet:
        """Open ``model_path`` (+ its ``.json`` sidecar, which must say ``kind: facenet``).
        ``precision`` bf16 runs it on OpenVINO in place of a CPU ``backend`` (CPUs with native
        bf16 only); its embeddings match fp32's, so a gallery serves both. ``auto`` is bf16
        for a CPU backend on such a CPU, else fp32. ``trt_plans``: which TensorRT plan the
        tensorrt backend opens (``load_engine``)."""
        path = Path(model_path)
        meta = checked_metadata(path)
        backend, precision = cpu_precision(backend, precision)
        engine = load_engine(
            path, backend=backend, threads=threads, precision=precision, trt_plans=trt_plans
        )
        net = cls(engine, meta, model_id=model_id_of(meta, path), flip=flip, max_batch=max_batch)
        _check_shapes(net, path)
        net.runs_as = runs_as(engine, meta, backend, precision, trt_plans)
        logger.info(
            "FaceNet %s: %s crops, %d-d, %s",
            net.model_id,
            net.alignment,
            net.embedding_size,
            net.runs_as,
        )
        return net

    # -- alignment ------------------------------------------------------------------------

    def align(
        self, image: np.ndarray, faces: FrameDetections, indices: Sequence[int] | None = None
    ) -> np.ndarray:
        """The model's crops (K, H, W, 3) of ``faces`` (all, or ``indices``) in ``image``."""
        height, width = self.image_size_hw
        if height != width:
            raise EngineError(
                f"{self.meta.name}: alignment needs a square input, got {height}x{width}"
            )
        chosen = range(len(faces)) if indices is None else indices
        crops = [self.align_face(image, faces.bbox_xyxy[k], faces.landmarks[k]) for k in chosen]
        if not crops:
            return np.zeros((0, height, width, *image.shape[2:]), dtype=image.dtype)
        return np.stack(crops)

    def align_face(
        self, image: np.ndarray, bbox_xyxy: np.ndarray, landmarks: np.ndarray
    ) -> np.ndarray:
        """The model's crop (H, W, 3) of one face, given by its box and 5 landmarks (each
        alignment uses one of them); ValueError for a face it cannot cut out."""
        size = self.image_size_hw[0]
        if self.alignment == "similarity":
            return align_similarity(image, landmarks, size, self.template)
        return crop_with_margin(image, bbox_xyxy, self.margin, size)

    def embed_faces(self, image: np.ndarray, faces: FrameDetections) -> Floats:
        """Align and embed every face of one frame: (K, D)."""
        return self.embed_picks([(image, faces, k) for k in range(len(faces))])

    def embed_picks(self, picks: Sequence[FacePick]) -> Floats:
        """Align and embed the chosen faces of any frames in one pass: (K, D), in order."""
        if not picks:
            return np.zeros((0, self.embedding_size), np.float32)
        return self.embed(np.concatenate([self.align(f, d, [k]) for f, d, k in picks]))

    # -- embedding ------------------------------------------------------------------------

    def preprocess(self, crops: np.ndarray) -> Floats:
        """uint8 BGR crops (N, H, W, 3) -> the model's NCHW float32 input."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[3] != 3:
            raise ValueError(f"expected crops of shape (N, H, W, 3), got {crops.shape}")
        if tuple(crops.shape[1:3]) != tuple(self.image_size_hw):
            raise ValueError(
                f"crops are {crops.shape[2]}x{crops.shape[1]} but {self.meta.name} takes "
                f"{self.image_size_hw[1]}x{self.image_size_hw[0]}; cut them with FaceNet.align"
            )
        if self.meta.channel_order.upper() == "RGB":
            crops = crops[..., ::-1]
        if self.prewhiten:
            x = prewhiten(crops)
        else:
            x = (crops.astype(np.float32) - self.meta.mean) / self.meta.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def embed(self, crops: np.ndarray, flip: bool | None = None) -> Floats:
        """L2-normalised embeddings (N, D) float32 of uint8 BGR crops of the model's size."""
        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, self.embedding_size), np.float32)
        flip = self.flip if flip is None else flip
        # a batch at a time: the float input of 5,000 crops at once took 2.6 GB
        step = self.max_batch
        out = [self._embed_batch(crops[k : k + step], flip) for k in range(0, len(crops), step)]
        return np.concatenate(out)

    def _embed_batch(self, crops: np.ndarray, flip: bool) -> Floats:
        x = self.preprocess(crops)
        if not flip:
            return self._run(x)
        both = self._run(np.concatenate([x, x[..., ::-1]]))
        return _l2_normalise(both[: len(x)] + both[len(x) :])

    def _run(self, x: np.ndarray) -> Floats:
        """Split ``x`` into engine-sized batches (a fixed batch gets its last one zero-padded)."""
        out = []
        for start in range(0, len(x), self.max_batch):
            chunk = x[start : start + self.max_batch]
            real = len(chunk)
            if self.fixed_batch is not None and real < self.fixed_batch:
                pad = np.zeros((self.fixed_batch - real, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            result = self.engine.infer({self.input_name: np.ascontiguousarray(chunk)})
            out.append(np.asarray(result[self.output_name])[:real].reshape(real, -1))
        return _l2_normalise(np.concatenate(out))

    def close(self) -> None:
        self.engine.close()


def model_id_of(meta: ModelMetadata, path: Path) -> str:
    """How galleries name the model file at ``path``: its sidecar's name and the file's hash
    (``embeddings_id`` adds the flip setting)."""
    return f"{meta.name}@sha256:{file_sha256(path)[:16]}"


FLIP_SUFFIX = "+flip"


def embeddings_id(model_id: str, flip: bool) -> str:
    """What a gallery records its embeddings as made by (``FaceNet.model_id``): the model's
    id, and ``+flip`` when each face's embedding is averaged with its mirror image's."""
    return model_id + (FLIP_SUFFIX if flip else "")


def split_embeddings_id(embeddings: str) -> tuple[str, bool]:
    """``embeddings_id``'s parts: the model's id and whether it flips."""
    return embeddings.removesuffix(FLIP_SUFFIX), embeddings.endswith(FLIP_SUFFIX)


def outdated_threshold(extra: dict[str, Any], threshold: float) -> float | None:
    """The threshold a new gallery of this model starts at now, when ``threshold`` is the
    model's LFW best-accuracy one, which galleries started at before (until 2026-11-30) and
    which names strangers far more often (``starting_threshold``); else None."""
    lfw = extra.get("lfw") or {}
    best = finite_number(lfw.get("best_threshold")) if isinstance(lfw, dict) else None
    start = starting_threshold(extra)
    if best is None or start is None or start >= best:
        return None
    return start if abs(threshold - best) < 5e-4 else None


# a new gallery's threshold when its model has no LFW figures: squared L2 on unit vectors,
# FaceNet's usual same/different cut (facenet-pytorch's published weights), no other model's
DEFAULT_THRESHOLD = 1.1


def starting_threshold(extra: dict[str, Any]) -> float | None:
    """The threshold a new gallery of this model starts at: its sidecar's LFW threshold for a
    false accept rate of 1e-3 when there is one, else LFW's best threshold; None without LFW
    figures on the galleries' scale (squared L2 of single embeddings). The best threshold
    balances LFW's pairs, one against one; a gallery compares each face with every enrolled
    photo, so a stranger meets many chances of a close one (dlib's network at 0.19: 44 % of
    strangers named, against 100 enrolled photos)."""
    lfw = extra.get("lfw") or {}
    on_our_scale = (
        isinstance(lfw, dict)
        and lfw.get("distance_metric", 0) == 0
        and not lfw.get("use_flipped_images", False)
    )  # else it is an angle, or a distance between concatenated embeddings
    start = (lfw.get("far_threshold") or lfw.get("best_threshold")) if on_our_scale else None
    return finite_number(start) or None  # not a number (a damaged sidecar): facewatch's own


def runs_as(
    engine: Engine, meta: ModelMetadata, backend: str, precision: str, trt_plans: PlanRequest | None
) -> str:
    """What a model computes in and where, for the logs: ``precision`` on a CPU backend, a
    TensorRT plan's own (fp16 by default; int8 is P-Net's only), fp16 under torch's
    autocast."""
    if backend == "tensorrt":
        precision = trt_plans.options_for(meta).precision if trt_plans else "the newest plan's"
    elif getattr(engine, "fp16", False):
        precision = "fp16"
    return f"{precision} on {backend}"


def _check_shapes(net: FaceNet, path: Path) -> None:
    """EngineError (the engine closed) where the model itself fixes another input size (NCHW)
    or embedding size than its sidecar says: every crop would be refused at the first
    embedding, or a gallery made with the wrong size."""
    model_hw = _fixed(net.engine.inputs[0].shape[2:])
    output = {spec.name: spec for spec in net.engine.outputs}[net.output_name]
    size = math.prod(_fixed(output.shape[1:]) or (0,))  # what embed flattens it to; 0: dynamic
    problem = ""
    if model_hw and model_hw != tuple(net.image_size_hw):
        problem = f"input_size_hw {list(net.image_size_hw)}, but {path.name} takes {list(model_hw)}"
    if size and net.meta.embedding_size not in (None, size):
        problem = f"embedding_size {net.meta.embedding_size}, but {path.name} gives {size}"
    if problem:
        net.close()
        raise EngineError(f"{ModelMetadata.sidecar_path(path)}: {problem}")


def _fixed(dims: tuple[int | None, ...]) -> tuple[int, ...] | None:
    """``dims`` when the model fixes every one (none is dynamic), else None."""
    fixed = tuple(d for d in dims if isinstance(d, int))
    return fixed if dims and len(fixed) == len(dims) else None


def checked_metadata(path: Path) -> ModelMetadata:
    """The sidecar of the FaceNet model file at ``path``, checked as ``FaceNet.load`` checks
    it before opening the model: EngineError naming the file for a missing model, a missing
    sidecar (or a training checkpoint), another kind of model, or settings it cannot run."""
    if not path.is_file():
        raise EngineError(f"{path}: FaceNet model file not found")
    meta = ModelMetadata.load(path)
    _check_metadata(meta, str(ModelMetadata.sidecar_path(path)))
    return meta


def _check_metadata(meta: ModelMetadata, where: str) -> None:
    if meta.kind != "facenet":
        raise EngineError(
            f"{where}: sidecar says kind {meta.kind!r}, expected 'facenet' (an embedding model)"
        )
    if meta.input_size_hw is None:
        raise EngineError(f"{where}: a FaceNet sidecar needs input_size_hw")
    alignment = meta.extra.get("alignment", "margin")
    if alignment not in ALIGNMENTS:
        raise EngineError(
            f"{where}: unknown alignment {alignment!r} in the sidecar; expected one of {ALIGNMENTS}"
        )
    try:
        template_of(meta.extra, meta.input_size_hw[0])
    except ValueError as exc:
        raise EngineError(f"{where}: sidecar {exc}") from None
    margin = meta.extra.get("margin", 32)
    if not is_count(margin, 0):
        raise EngineError(
            f"{where}: sidecar margin: expected pixels (0 or more), got {brief(margin)}"
        )
    if not isinstance(meta.extra.get("prewhiten", False), bool):
        raise EngineError(f"{where}: sidecar prewhiten: expected true or false")
    if meta.channel_order.upper() not in ("RGB", "BGR"):
        raise EngineError(f"{where}: channel_order must be RGB or BGR, got {meta.channel_order!r}")
