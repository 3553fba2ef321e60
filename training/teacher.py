"""Teachers for `--loss distill`: an ONNX embedding model run on the training crops, or
embeddings computed beforehand (any model, e.g. dlib's ResNet) stored in a ``.npz`` file.

A ``.npz`` teacher holds ``paths`` (image paths relative to the dataset directory, as
``<identity>/<file>``) and ``embeddings`` (N, D). It is looked up by image, so the
teacher's embedding is of the un-augmented photo; `facewatch train embed` writes one from
any ONNX embedding model, and other tools (dlib) can write the same two arrays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.data import DataError, ImageClass, flatten, load_rgb

logger = logging.getLogger(__name__)


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def centred(table: np.ndarray) -> np.ndarray:
    """Unit vectors with their mean removed, normalised again. Some descriptors fill a narrow
    cone (dlib's: mean pairwise cosine 0.85 on faces), where a student that outputs one fixed
    direction already scores cosine 0.9 with every target and learns nothing else; centred,
    the targets spread over the sphere. Euclidean differences between faces are unchanged."""
    return _l2(table - table.mean(axis=0, keepdims=True))


class OnnxTeacher:
    """Embeds the very crops the student sees (after augmentation)."""

    def __init__(self, model_path: str | Path) -> None:
        from training.embedders import OnnxEmbedder

        self.embedder = OnnxEmbedder(model_path)

    def to(self, device: torch.device) -> OnnxTeacher:
        """Runs on the CPU (ONNX Runtime) wherever the student trains."""
        return self

    def __call__(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        rgb = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))  # the loader's uint8 NCHW
        return torch.from_numpy(self.embedder.embed_rgb(rgb))


class CachedTeacher:
    """Looks embeddings up by image index in the flat dataset order."""

    def __init__(
        self, npz_path: str | Path, dataset: list[ImageClass], data_dir: str | Path
    ) -> None:
        npz_path, root = Path(npz_path), Path(data_dir).expanduser()
        try:
            with np.load(npz_path) as data:
                names, table = [str(p) for p in data["paths"]], _l2(data["embeddings"])
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(
                f"{npz_path}: not a teacher file with 'paths' and 'embeddings': {exc}"
            ) from None
        row = {name: i for i, name in enumerate(names)}
        paths, _ = flatten(dataset)
        keys = [p.relative_to(root).as_posix() for p in paths]
        missing = [k for k in keys if k not in row]
        if missing:
            raise DataError(
                f"{npz_path}: no teacher embedding for {len(missing)} image(s), e.g. {missing[:3]}"
            )
        self.embeddings = torch.from_numpy(centred(table[[row[k] for k in keys]]))

    def to(self, device: torch.device) -> CachedTeacher:
        """Keep the table on the training device (a copy of each batch's targets from host
        memory would wait for the GPU at every step)."""
        self.embeddings = self.embeddings.to(device)
        return self

    def __call__(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.embeddings[indices.to(self.embeddings.device, non_blocking=True)]


def load_teacher(
    path: str | Path, dataset: list[ImageClass], data_dir: str | Path
) -> OnnxTeacher | CachedTeacher:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: teacher not found")
    if path.suffix.lower() == ".npz":
        return CachedTeacher(path, dataset, data_dir)
    return OnnxTeacher(path)


def write_cache(
    model_path: str | Path,
    dataset: list[ImageClass],
    data_dir: str | Path,
    out: str | Path,
    batch_size: int = 64,
) -> Path:
    """Embed every image of ``dataset`` with an ONNX model into a ``.npz`` teacher file."""
    from training.embedders import OnnxEmbedder

    embedder = OnnxEmbedder(model_path)
    root = Path(data_dir).expanduser()
    paths, _ = flatten(dataset)
    parts = []
    for start in tqdm(range(0, len(paths), batch_size), desc="embedding", unit="batch"):
        chunk = paths[start : start + batch_size]
        parts.append(
            embedder.embed_rgb(np.stack([_fit(load_rgb(p), embedder.image_size) for p in chunk]))
        )
    out = Path(out)
    names = np.array([p.relative_to(root).as_posix() for p in paths])
    np.savez_compressed(out, paths=names, embeddings=np.concatenate(parts).astype(np.float16))
    return out


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    from training.data import crop_square

    return crop_square(image, size, None)
