"""What a gallery holds, checked as it is read: the meta values, each person's own threshold
and every embedding. A file edited by hand, flipped by a failing disk or written by an older
facewatch is refused with a GalleryError that names the file, the person and what is wrong,
never matched against: a vector ten times too long named anyone near it at distance 0, one
holding NaN made everyone unknown, a blob of the wrong length stopped the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from daemon.gallery_file import GalleryError

MAX_THRESHOLD = 4.0  # squared L2 between unit vectors: the largest distance there is
UNIT_TOLERANCE = 1e-3  # how far an embedding's L2 norm may be from 1 (float32 rounding)
RESTORE = (
    "the gallery file is damaged: restore an export into a new gallery (`facewatch gallery "
    "import FILE --gallery NEW`)"
)


def check_threshold(value: float, what: str = "threshold") -> float:
    """``value`` when a gallery takes it as a threshold: a squared L2 distance between unit
    vectors, in (0, 4] (not NaN, not infinite); else GalleryError saying so."""
    if not 0.0 < value <= MAX_THRESHOLD:
        raise GalleryError(f"{what} {value:g} outside (0, 4] (squared L2 on unit vectors)")
    return float(value)


def default_threshold(path: Path, stored: str) -> float:
    """The default threshold as ``meta`` stores it (text), else GalleryError naming it as the
    default (not a person's), with the command that sets it again."""
    try:
        return check_threshold(float(stored), "the default threshold")
    except (TypeError, ValueError):
        problem = f"the default threshold {stored!r} is not a number"
    except GalleryError as exc:
        problem = str(exc)
    raise GalleryError(
        f"{path}: {problem}: set it again (facewatch gallery threshold --default VALUE)"
    )


def embedding_size(path: Path, stored: str) -> int:
    """The embedding size ``meta`` stores, else GalleryError (no command changes it: only a
    damaged or hand-edited file holds one that is not a positive whole number)."""
    try:
        size = int(stored)
    except (TypeError, ValueError):
        size = 0
    if size <= 0:
        raise GalleryError(
            f"{path}: its embedding_size {stored!r} is not a positive whole number; {RESTORE}"
        )
    return size


def own_threshold(path: Path, name: str, stored: Any) -> float | None:
    """A person's own threshold as ``identities`` holds it (None: the default's), else
    GalleryError: SQLite keeps text that does not read as a number as it is."""
    if stored is None:
        return None
    if isinstance(stored, int | float) and not isinstance(stored, bool):
        return float(stored)
    raise GalleryError(
        f"{path}: {name}'s threshold {stored!r} is not a number: set it again (facewatch "
        f"gallery threshold {name!r} VALUE, or {name!r} default)"
    )


def vectors_of(path: Path, names: list[str], blobs: list[Any], size: int) -> np.ndarray:
    """The embeddings (M, D) from their stored blobs (float32, little-endian), row k
    ``names[k]``'s, checked in one pass over them all: GalleryError naming the first damaged
    face (a blob of another type or length, a value not finite, a length off 1)."""
    lengths = np.array([len(b) if isinstance(b, bytes) else -1 for b in blobs], np.int64)
    wrong = np.flatnonzero(lengths != 4 * size)
    if len(wrong):
        raise _wrong_lengths(path, names, blobs, wrong, size)
    joined = bytearray().join(blobs)  # (one copy, writable: callers get their own array)
    matrix = np.frombuffer(joined, dtype="<f4").reshape(len(blobs), size)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN give a norm that fails
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
        bad = np.flatnonzero(~(np.abs(norms - 1.0) <= UNIT_TOLERANCE))
    if len(bad):
        k = int(bad[0])
        finite = bool(np.isfinite(matrix[k]).all())
        what = f"has length {norms[k]:.4g}" if finite else "holds values that are not finite"
        raise GalleryError(
            f"{_face(path, names, k, len(bad))}: {what}, not a unit vector; {_mend(names[k])}"
        )
    return matrix.astype(np.float32, copy=False)


def _wrong_lengths(
    path: Path, names: list[str], blobs: list[Any], wrong: np.ndarray, size: int
) -> GalleryError:
    """The error for blobs that are not ``size`` float32: when every face holds one other
    length, the embedding_size in ``meta`` is what is wrong."""
    sizes = {len(b) for b in blobs if isinstance(b, bytes)}
    if len(wrong) == len(blobs) and len(sizes) == 1 and min(sizes) % 4 == 0 and min(sizes):
        return GalleryError(
            f"{path}: its embedding_size is {size}, but every face holds {min(sizes) // 4} "
            f"values; {RESTORE}"
        )
    k = int(wrong[0])
    blob = blobs[k]
    held = f"{len(blob)} bytes" if isinstance(blob, bytes) else f"{str(blob)[:20]!r}, not bytes"
    return GalleryError(
        f"{_face(path, names, k, len(wrong))}: {held}, {4 * size} expected; {_mend(names[k])}"
    )


def _face(path: Path, names: list[str], k: int, damaged: int) -> str:
    """'PATH: NAME's face 2 (of 3)' for row ``k`` (each person's rows together, in the order
    enrolled), and how many more faces are damaged."""
    name = names[k]
    first = names.index(name)
    count = names.count(name)
    more = f" (and {damaged - 1} more damaged face(s))" if damaged > 1 else ""
    return f"{path}: {name}'s face {k - first + 1} (of {count}){more}"


def _mend(name: str) -> str:
    return f"{RESTORE}, or `facewatch gallery remove {name!r}` and enroll them again"
