"""Teachers for `--loss distill`: an ONNX embedding model run beside the student on each
augmented batch, or embeddings computed beforehand (any model, e.g. dlib's ResNet through
`facewatch train embed-dlib`) stored in a ``.npz`` file.

An ONNX teacher (one that facewatch exported or imported: Inception-ResNet-v1 or dlib's
ResNet, e.g. the shipped models/facenet/facenet.onnx) is rebuilt in PyTorch and runs on the
training device: it sees the very crops the student sees, after random crop and flip. A
``.npz`` teacher holds ``paths`` (image paths relative to the dataset directory, as
``<identity>/<file>``) and ``embeddings`` (N, D). It is looked up by image, so its target
is the descriptor of the un-augmented photo, which the student cannot match on augmented
crops (the 2026-11-29 GPU run, training/gpu_job.sh). Both teachers' targets are centred
(``centred``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engines.base import progress_wanted
from training.data import DataError, ImageClass, crop_square, flatten, load_rgb, standardize_batch

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


class TorchTeacher:
    """An ONNX embedding model, rebuilt in PyTorch, embedding each batch the student sees.

    The loader's uint8 RGB crops are resized to the teacher's input when the sizes differ
    (the crops' framing is kept: train on crops made for the teacher, ``align --template``),
    then standardised as its sidecar says. The targets are centred on the mean of the
    teacher's embeddings of up to ``CENTRE_SAMPLE`` training crops (central crops, taken
    once when the teacher moves to the training device)."""

    CENTRE_SAMPLE = 2048

    def __init__(self, model_path: str | Path, dataset: list[ImageClass], image_size: int) -> None:
        from training.export_facenet import network_from_onnx

        self.net, self.meta = network_from_onnx(model_path)
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        paths, _ = flatten(dataset)
        rng = np.random.default_rng(0)
        pick = rng.permutation(len(paths))[: self.CENTRE_SAMPLE]
        self._sample = [paths[i] for i in sorted(pick)]
        self.image_size = image_size
        self.centre: torch.Tensor | None = None

    def to(self, device: torch.device) -> TorchTeacher:
        self.net.to(device)
        if self.centre is None:
            crops = [crop_square(load_rgb(p), self.image_size, None) for p in self._sample]
            pixels = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy())
            table = torch.cat([self._embed(part.to(device)) for part in pixels.split(128)])
            self.centre = table.mean(0, keepdim=True)
        self.centre = self.centre.to(device)
        return self

    @torch.no_grad()
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """RGB pixels 0-255 (N, 3, H, W; uint8, or float after warps) on the teacher's device
        -> its L2-normalised embeddings."""
        meta = self.meta
        pixels = x.float()
        size = tuple(meta.input_size_hw or pixels.shape[-2:])
        if tuple(pixels.shape[-2:]) != size:
            pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True)
        if meta.channel_order.upper() == "BGR":
            pixels = pixels.flip(1)
        if meta.extra.get("prewhiten"):
            pixels = standardize_batch(pixels, "prewhiten")
        else:
            pixels = (pixels - meta.mean) / meta.std
        return F.normalize(self.net.features(pixels).float(), dim=1)

    def __call__(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        assert self.centre is not None, "move the teacher to its device first (.to)"
        x = x.to(self.centre.device, non_blocking=True)
        return F.normalize(self._embed(x) - self.centre, dim=1)


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
    path: str | Path, dataset: list[ImageClass], data_dir: str | Path, image_size: int = 160
) -> TorchTeacher | CachedTeacher:
    """The teacher of ``--teacher``: a ``.npz`` file, else an ONNX model run on the student's
    ``image_size`` crops."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: teacher not found")
    if path.suffix.lower() == ".npz":
        return CachedTeacher(path, dataset, data_dir)
    return TorchTeacher(path, dataset, image_size)


def write_cache(
    model_path: str | Path,
    dataset: list[ImageClass],
    data_dir: str | Path,
    out: str | Path,
    batch_size: int = 64,
    progress: bool = True,
) -> Path:
    """Embed every image of ``dataset`` with an ONNX model into a ``.npz`` teacher file, with
    a progress bar on a terminal (``progress`` False: none)."""
    from training.embedders import OnnxEmbedder

    embedder = OnnxEmbedder(model_path)
    root = Path(data_dir).expanduser()
    paths, _ = flatten(dataset)
    parts = []
    starts = range(0, len(paths), batch_size)
    bar = tqdm(starts, desc="embedding", unit="batch", disable=not progress_wanted(not progress))
    for start in bar:
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
