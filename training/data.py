"""Folder-per-identity face datasets, image loading and augmentation.

A dataset directory holds one sub-directory per identity, each with that person's images
(``data_dir/<identity>/<image>``), as the FaceNet project's aligned datasets do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from engines.image_files import FolderFiles, folder_files, is_hidden
from engines.images import ImageError, read_image
from training.choices import STANDARDIZATIONS

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset, image or pairs file that cannot be used; the message names it."""


@dataclass(frozen=True)
class ImageClass:
    """One identity: its name and its image paths (sorted)."""

    name: str
    image_paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.image_paths)


def list_images(folder: Path) -> list[Path]:
    """The photos directly inside ``folder``, sorted by name, as every command takes a
    folder's photos (``engines.image_files``: not hidden ones such as macOS's ._x.jpg)."""
    return identity_files(folder).files


def identity_files(folder: Path) -> FolderFiles:
    """An identity folder's photos (as ``list_images``) and the files left out."""
    return folder_files(folder, recursive=False)


def left_out_note(root: Path, walks: list[FolderFiles]) -> str | None:
    """One note for a dataset's files left out, each named within ``root``
    (``ada/notes.txt``), or None."""
    whole = FolderFiles(
        files=[p for walk in walks for p in walk.files],
        left_out=[p for walk in walks for p in walk.left_out],
    )
    return whole.note(root)


def identity_folders(root: Path) -> list[Path]:
    """The identity folders of a folder-per-identity dataset, sorted: not hidden ones
    (``.thumbnails``, a NAS's ``@eaDir``), which are never people."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))


def load_dataset(data_dir: str | Path, min_images: int = 1) -> list[ImageClass]:
    """Read a folder-per-identity dataset.

    Raises DataError naming the directory when it is missing, has no identity folders, or
    when an identity folder holds no images (unless ``min_images`` > 1 asks to leave small
    identities out). Identities with fewer than ``min_images`` images are left out (with a
    log line). Hidden folders (``.name``, ``@eaDir``) are not identities.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found")
    folders = identity_folders(root)
    if not folders:
        raise DataError(f"{root}: no identity folders (expected {root}/<identity>/<image>)")
    classes = []
    walks = []
    for folder in folders:
        walks.append(walk := identity_files(folder))
        paths = walk.files
        if not paths and min_images <= 1:
            note = walk.note(folder)
            raise DataError(
                f"{folder}: identity folder holds no images (remove it, or leave out small "
                "identities with --min-nrof-images-per-class N)" + (f"; {note}" if note else "")
            )
        if len(paths) < min_images:
            logger.info("%s: %d images < %d, left out", folder, len(paths), min_images)
            continue
        classes.append(ImageClass(folder.name, tuple(paths)))
    note = left_out_note(root, walks)
    if note:
        logger.info("%s", note)
    if not classes:
        raise DataError(f"{root}: no identity has at least {min_images} images")
    return classes


def flatten(dataset: list[ImageClass]) -> tuple[list[Path], list[int]]:
    """All image paths and their class indices."""
    paths: list[Path] = []
    labels: list[int] = []
    for index, cls in enumerate(dataset):
        paths.extend(cls.image_paths)
        labels.extend([index] * len(cls))
    return paths, labels


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB; DataError naming the file when it cannot be used."""
    try:
        bgr = read_image(str(path))
    except ImageError as exc:
        raise DataError(str(exc)) from None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def crop_square(image: np.ndarray, image_size: int, rng: np.random.Generator | None) -> np.ndarray:
    """A random (``rng`` given) or central ``image_size`` crop; smaller images are resized up."""
    height, width = image.shape[:2]
    if height < image_size or width < image_size:
        return cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    if rng is None:
        y0, x0 = (height - image_size) // 2, (width - image_size) // 2
    else:
        y0 = int(rng.integers(0, height - image_size + 1))
        x0 = int(rng.integers(0, width - image_size + 1))
    return image[y0 : y0 + image_size, x0 : x0 + image_size]


def standardize(images: np.ndarray, method: str = "fixed") -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 in the network's input range.

    ``fixed``: (x - 127.5) / 128 (facenet-pytorch). ``prewhiten``: per image, subtract the
    mean and divide by max(std, 1/sqrt(pixels)) (the original FaceNet project).
    """
    x = images.astype(np.float32)
    if method == "fixed":
        return (x - 127.5) / 128.0
    if method == "prewhiten":
        axes = (-3, -2, -1)
        mean = x.mean(axis=axes, keepdims=True)
        std = x.std(axis=axes, keepdims=True)
        floor = 1.0 / np.sqrt(x.shape[-3] * x.shape[-2] * x.shape[-1])
        return ((x - mean) / np.maximum(std, np.float32(floor))).astype(np.float32)
    raise ValueError(f"unknown standardization {method!r}; expected one of {STANDARDIZATIONS}")


def standardize_batch(images: torch.Tensor, method: str = "fixed") -> torch.Tensor:
    """``standardize`` for a uint8 (N, 3, H, W) batch where it is (the training device):
    float32 in the network's input range, in the batch's memory layout."""
    x = images.float()
    if method == "fixed":
        return (x - 127.5) / 128.0
    if method == "prewhiten":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
        floor = 1.0 / float(np.sqrt(x[0].numel()))
        return (x - mean) / std.clamp(min=floor)
    raise ValueError(f"unknown standardization {method!r}; expected one of {STANDARDIZATIONS}")


def warp_batch(
    pixels: torch.Tensor,
    generator: torch.Generator,
    rotate: float = 0.0,
    scale: float = 0.0,
    color: float = 0.0,
) -> torch.Tensor:
    """Random warps of a batch where it is (the training device): (N, 3, H, W) pixels,
    0-255 -> float32, each crop rotated about its centre by up to ``rotate`` degrees and
    scaled by a factor in [1 - ``scale``, 1 + ``scale``] (the edges mirrored where the warp
    reaches past them), its brightness and contrast changed by up to ``color`` and made grey
    with probability ``color`` / 2. The draws come from ``generator`` (on the CPU), so a
    seeded run warps the same way each time. With all three 0 the pixels come back as they
    were."""
    x = pixels.float()
    n = len(x)

    def uniform(spread: float) -> torch.Tensor:
        return ((torch.rand(n, generator=generator) * 2 - 1) * spread).to(x.device)

    if rotate or scale:
        angle = uniform(rotate) * (np.pi / 180)
        zoom = 1 + uniform(scale)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        zero = torch.zeros_like(cos)
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if color:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast, brightness = 1 + uniform(color), 1 + uniform(color)
        x = (x - mean) * contrast[:, None, None, None] + mean * brightness[:, None, None, None]
        grey = (torch.rand(n, generator=generator) < color / 2).to(x.device)
        luma = (x * x.new_tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)
        x = torch.where(grey[:, None, None, None], luma.expand_as(x), x).clamp(0, 255)
    return x


@dataclass(frozen=True)
class Augment:
    """What the training loader does to each image: crop to ``image_size``, maybe flip.
    Items stay uint8 (CHW): a quarter of float32's bytes through the loader's shared memory
    and onto the GPU; the training loop standardises each batch there (``standardize_batch``)."""

    image_size: int = 160
    random_crop: bool = False
    random_flip: bool = False

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = crop_square(image, self.image_size, rng if self.random_crop else None)
        if self.random_flip and rng.random() < 0.5:
            image = image[:, ::-1]
        return np.ascontiguousarray(image.transpose(2, 0, 1))


class FaceImages(Dataset[tuple[torch.Tensor, int, int]]):
    """Images by path, augmented. A key is an image index or (image index, round);
    items are (CHW uint8 tensor, label, image index).

    Each item draws its augmentation from a generator seeded by (``seed``, round, index),
    so runs repeat exactly with any number of loader workers, and one long-lived loader
    serves every round (the round travels in the key).
    """

    def __init__(
        self, paths: list[Path], labels: list[int], augment: Augment, seed: int = 0
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths, self.labels, self.augment = list(paths), list(labels), augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, round_id = (key, 0) if isinstance(key, int) else (int(key[0]), int(key[1]))
        rng = np.random.default_rng((self.seed, round_id, index))
        image = self.augment(self._readable(index), rng)
        return torch.from_numpy(image), self.labels[index], index

    def _readable(self, index: int) -> np.ndarray:
        """The image ``index``, or, when it cannot be read (a file corrupted since the run
        began, say), with a warning, another image of the same identity: one bad file does
        not end a run of hours. DataError when none of the identity's images can be read."""
        try:
            return load_rgb(self.paths[index])
        except DataError as exc:
            logger.warning("%s; using another image of the same identity instead", exc)
        same = [k for k, label in enumerate(self.labels) if label == self.labels[index]]
        start = same.index(index)
        for k in same[start + 1 :] + same[:start]:
            try:
                return load_rgb(self.paths[k])
            except DataError:
                continue
        raise DataError(f"no image of {self.paths[index].parent} can be read")


class BatchPlan:
    """A batch sampler whose batches the training loop sets before each pass, so a
    DataLoader with persistent workers can serve changing batches."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)
