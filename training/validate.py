"""`facewatch train validate`: the LFW protocol on any model (checkpoint or ONNX).

The LFW images are either already aligned crops (``--lfw-dir`` made by `facewatch train
align`) or raw LFW photos aligned on the fly (``--align``) with MTCNN and the model's
own alignment (its sidecar's ``extra["alignment"]``: margin crop or 5-point similarity).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engines.align import align_similarity, crop_with_margin, pick_main_face
from engines.base import file_sha256, progress_wanted
from training.data import DataError, load_rgb
from training.embedders import Embedder
from training.lfw import LfwResult, evaluate_embedded, plot_roc
from training.lfw_pairs import nrof_folds_for, pair_images, read_pairs

logger = logging.getLogger(__name__)


class MtcnnAligner:
    """Raw photo -> one aligned face crop, the way the model was trained to see faces."""

    def __init__(
        self,
        mtcnn_dir: str | Path,
        image_size: int,
        alignment: str,
        margin: int,
        threads: int = 0,
        template: np.ndarray | None = None,
    ):
        from engines.mtcnn import MTCNN

        self.detector = MTCNN.load(mtcnn_dir, threads=threads)
        self.image_size, self.alignment, self.margin = image_size, alignment, margin
        self.template = template

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        found = self.detector.detect([bgr])[0]
        if len(found) == 0:
            return None
        k = pick_main_face(found.bbox_xyxy, rgb.shape[:2])
        if self.alignment == "similarity":
            return align_similarity(rgb, found.landmarks[k], self.image_size, self.template)
        return crop_with_margin(rgb, found.bbox_xyxy[k], self.margin, self.image_size)


def centre_crop(rgb: np.ndarray, image_size: int, margin: int) -> np.ndarray:
    """Fallback when MTCNN finds no face: LFW photos are centred on the face, so the
    central square (half the image plus the margin) stands in for the detection."""
    h, w = rgb.shape[:2]
    side = min(h, w) // 2 + margin
    box = [(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2]
    return crop_with_margin(rgb, box, 0, image_size)


def load_faces(
    paths: list[Path], aligner: MtcnnAligner | None, size: int, progress: bool = True
) -> tuple[np.ndarray, int]:
    """uint8 RGB crops of every path; returns the crops and how many had no detected face.
    A progress bar for 200 or more, on a terminal (``progress`` False: none)."""
    crops, no_face = [], 0
    first_shape: tuple[int, ...] | None = None
    for path in tqdm(paths, desc="LFW images", disable=_no_bar(len(paths), progress)):
        rgb = load_rgb(path)
        if aligner is not None:
            face = aligner(rgb)
            if face is None:
                no_face += 1
                face = centre_crop(rgb, size, aligner.margin)
            rgb = face
        if first_shape is None:
            first_shape = rgb.shape
        elif rgb.shape != first_shape:
            raise DataError(
                f"{path}: {rgb.shape[1]}x{rgb.shape[0]} differs from the other crops ({first_shape[1]}x{first_shape[0]})"
            )
        crops.append(rgb)
    return np.stack(crops), no_face


def evaluate_pairs(
    embedder: Embedder,
    pairs_file: str | Path,
    lfw_dir: str | Path,
    nrof_folds: int | None = None,
    batch_size: int = 100,
    aligner: MtcnnAligner | None = None,
    distance_metric: int = 0,
    subtract_mean: bool = False,
    flipped: bool = False,
    progress: bool = True,
) -> tuple[LfwResult, int]:
    """Embed every image the pairs name once, then run the protocol. Returns the result
    and the number of images where no face was found (0 for aligned crops). ``flipped``:
    as the original's --use_flipped_images, each image's embedding and its mirror's,
    concatenated. ``nrof_folds`` None: as many as the file's header declares (else 10).
    ``progress`` False: no progress bars (else on a terminal, for 200 images or more)."""
    pairs, header = read_pairs(pairs_file, lfw_dir)
    folds = nrof_folds_for(pairs_file, pairs, header, nrof_folds)
    images = pair_images(pairs)
    crops, no_face = load_faces(images, aligner, embedder.image_size, progress)
    embeddings = _embed(embedder, crops, batch_size, "embedding", progress)
    if flipped:
        mirrored = np.ascontiguousarray(crops[:, :, ::-1])
        mirror = _embed(embedder, mirrored, batch_size, "embedding mirrored", progress)
        embeddings = np.concatenate([embeddings, mirror], axis=1)
    result = evaluate_embedded(pairs, images, embeddings, folds, distance_metric, subtract_mean)
    return dataclasses.replace(result, use_flipped_images=flipped), no_face


def _no_bar(count: int, progress: bool) -> bool:
    """No bar for fewer than 200 images, nor off a terminal (``engines.base.progress_wanted``)."""
    return count < 200 or not progress_wanted(not progress)


def _embed(
    embedder: Embedder, crops: np.ndarray, batch_size: int, what: str, progress: bool = True
) -> np.ndarray:
    """``embedder.embed_rgb`` batch by batch, with a progress bar (LFW: 13,233 images)."""
    out = []
    with tqdm(
        total=len(crops), desc=what, unit="img", disable=_no_bar(len(crops), progress)
    ) as bar:
        for start in range(0, len(crops), batch_size):
            chunk = crops[start : start + batch_size]
            out.append(embedder.embed_rgb(chunk, batch_size=batch_size))  # type: ignore[call-arg]
            bar.update(len(chunk))
    return np.concatenate(out)


def evaluate_aligned(
    embedder: Embedder,
    pairs_file: str | Path,
    lfw_dir: str | Path,
    nrof_folds: int | None = None,
    batch_size: int = 100,
) -> LfwResult:
    """The protocol on LFW crops aligned beforehand."""
    return evaluate_pairs(embedder, pairs_file, lfw_dir, nrof_folds, batch_size)[0]


def write_report(
    result: LfwResult, no_face: int, out_dir: Path, model: str, pairs: str = ""
) -> dict[str, Path]:
    """``lfw.json`` (all figures, the model file's SHA-256, the pairs file) and ``roc.png``
    in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(model) if Path(model).is_file() else None
    report = {
        "model": model,
        "model_sha256": sha,
        "pairs": pairs,
        "images_without_face": no_face,
        **result.to_json(),
    }
    json_path = out_dir / "lfw.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    png = plot_roc(result, out_dir / "roc.png", title=f"LFW ROC: {Path(model).name}")
    return {"json": json_path, "roc": png}
