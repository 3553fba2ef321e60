"""LFW's pairs files (pairs.txt and the like) read, and the folds they are cut into.

A line names two images of one person ("name n1 n2") or of two ("name1 n1 name2 n2"); a
header "K N" says the file holds K folds of N same and N different pairs (pairs.txt: "10
300"). Folds are consecutive blocks of pairs in file order (pairs.txt is written fold by
fold), never shuffled; each must hold pairs of both kinds. training/lfw.py evaluates them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import brief
from training.data import DataError

# the LFW warnings under the name they had before the pairs left training/lfw.py (the log
# shows the name)
logger = logging.getLogger("training.lfw")


@dataclass(frozen=True)
class Pair:
    path_a: Path
    path_b: Path
    same: bool


def _image_path(lfw_dir: Path, name: str, number: str) -> Path:
    stem = f"{name}_{int(number):04d}"
    for ext in (".png", ".jpg", ".jpeg"):
        path = lfw_dir / name / (stem + ext)
        if _is_image(path):
            return path
    return lfw_dir / name / (stem + ".jpg")


def _is_image(path: Path) -> bool:
    """A file at ``path`` (False for a name the file system cannot hold: too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


MAX_HEADER_DIGITS = 9  # "10 300": folds and pairs per fold


def _is_number(field: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses)."""
    return field.isascii() and field.isdigit()


def _pairs_text(pairs_file: Path) -> str:
    """The pairs file's text; DataError naming the file and line when it is not UTF-8."""
    data = pairs_file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = len((data[: exc.start].decode("utf-8") + "x").splitlines())  # as read_pairs counts
        raise DataError(
            f"{pairs_file}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); pairs files "
            "are plain text"
        ) from None


def _parse_line(fields: list[str], where: str) -> tuple[tuple[str, str], tuple[str, str], bool]:
    try:
        if len(fields) == 3:
            int(fields[1]), int(fields[2])
            return (fields[0], fields[1]), (fields[0], fields[2]), True
        if len(fields) == 4:
            int(fields[1]), int(fields[3])
            return (fields[0], fields[1]), (fields[2], fields[3]), False
    except ValueError:
        pass
    raise DataError(
        f"{where}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {brief(' '.join(fields))}"
    )


def read_pairs(pairs_file: str | Path, lfw_dir: str | Path) -> tuple[list[Pair], tuple[int, ...]]:
    """Parse pairs.txt; returns the pairs and the numbers of its header (``(10, 300)`` for
    pairs.txt, ``(1100,)`` for pairsDevTrain.txt, ``()`` without one; see ``nrof_folds_for``).

    Raises DataError naming the file and line for a malformed line, and listing the
    missing images when any named image does not exist under ``lfw_dir``.
    """
    pairs_file, lfw_dir = Path(pairs_file).expanduser(), Path(lfw_dir).expanduser()
    if not pairs_file.is_file():
        raise DataError(f"{pairs_file}: pairs file not found")
    if not lfw_dir.is_dir():
        raise DataError(f"{lfw_dir}: LFW image directory not found")
    lines = [ln.split() for ln in _pairs_text(pairs_file).splitlines()]
    header: tuple[int, ...] = ()
    if lines and len(lines[0]) in (1, 2) and all(_is_number(f) for f in lines[0]):
        if any(len(f) > MAX_HEADER_DIGITS for f in lines[0]):
            raise DataError(
                f"{pairs_file}:1: header {brief(' '.join(lines[0]))}: a number of more than "
                f"{MAX_HEADER_DIGITS} digits"
            )
        header = tuple(int(f) for f in lines[0])
        lines = lines[1:]
    pairs, missing = [], []
    for number, fields in enumerate(lines, start=2 if header else 1):
        if not fields:
            continue
        a, b, same = _parse_line(fields, f"{pairs_file}:{number}")
        pa, pb = _image_path(lfw_dir, *a), _image_path(lfw_dir, *b)
        missing.extend(p for p in (pa, pb) if not _is_image(p))
        pairs.append(Pair(pa, pb, same))
    if missing:
        shown = ", ".join(str(p) for p in sorted(set(missing))[:5])
        raise DataError(
            f"{pairs_file}: {len(set(missing))} image(s) named in the pairs are missing "
            f"under {lfw_dir}, e.g. {shown}"
        )
    if not pairs:
        raise DataError(f"{pairs_file}: no pairs")
    return pairs, header


def fold_slices(n: int, nrof_folds: int) -> list[np.ndarray]:
    """Consecutive test-fold indices, sizes differing by at most one (as KFold does)."""
    if not 2 <= nrof_folds <= n:
        raise ValueError(f"nrof_folds must be in [2, {n}] for {n} pairs, got {nrof_folds}")
    return np.array_split(np.arange(n), nrof_folds)


def check_folds(same: np.ndarray, nrof_folds: int) -> None:
    """Each fold must hold same and different pairs: a fold of one kind has no threshold to
    learn from the others' or to test (its accuracy says nothing). Pairs files are written
    fold by fold, each with both kinds; cut into another number of folds they are not."""
    same = np.asarray(same, dtype=bool)
    for k, fold in enumerate(fold_slices(len(same), nrof_folds)):
        if same[fold].all() or not same[fold].any():
            kind = "same" if same[fold].all() else "different"
            raise ValueError(
                f"fold {k + 1} of {nrof_folds} (pairs {fold[0] + 1}-{fold[-1] + 1}) holds only "
                f"{kind} pairs: evaluate with the number of folds the file was written with "
                "(its header's first number; --lfw-nrof-folds)"
            )


def nrof_folds_for(
    pairs_file: str | Path, pairs: list[Pair], header: tuple[int, ...], asked: int | None
) -> int:
    """The folds to evaluate with: ``asked`` (--lfw-nrof-folds), else the K of a "K N" header
    (K folds of N same and N different pairs: pairs.txt says "10 300"), else 10 (the LFW
    protocol); checked (``check_folds``). DataError naming the file: for a header that does
    not fit the file (``header_folds``), and for a fold of one kind."""
    declared = header_folds(pairs_file, len(pairs), header, strict=asked is None)
    folds = asked or declared or 10
    if asked and declared and asked != declared:
        _warn_once(f"{pairs_file} declares {declared} folds; evaluating with {asked}")
    try:
        check_folds(np.array([p.same for p in pairs]), folds)
    except ValueError as exc:
        raise DataError(f"{pairs_file}: {exc}") from None
    return folds


def header_folds(
    pairs_file: str | Path, nrof_pairs: int, header: tuple[int, ...], strict: bool = True
) -> int | None:
    """The K of a "K N" header, checked against the pairs there are (2 K N); None without a
    header. A one-number header is a development-view file's (LFW's pairsDevTrain.txt "1100":
    that many same pairs, then as many different), which has no folds: DataError. A header
    that does not fit the file is a DataError when ``strict`` (no --lfw-nrof-folds), else a
    warning."""
    if not header:
        return None
    shown = " ".join(str(n) for n in header)
    if len(header) == 1:
        raise DataError(
            f"{pairs_file}: its header {shown!r} is that of a development-view file (as LFW's "
            f"pairsDevTrain.txt / pairsDevTest.txt: {header[0]} same pairs first, then the "
            "different ones), which cannot be split into folds: evaluate with the 10-fold "
            "pairs.txt"
        )
    folds, per_kind = header
    problem = ""
    if 2 * folds * per_kind != nrof_pairs:
        problem = (
            f"its header {shown!r} declares {folds} folds of {per_kind} same and {per_kind} "
            f"different pairs ({2 * folds * per_kind} pairs), but the file holds {nrof_pairs}"
        )
        if per_kind and nrof_pairs % (2 * per_kind) == 0 and nrof_pairs // (2 * per_kind) > 1:
            held = nrof_pairs // (2 * per_kind)
            problem += f": {held} folds of {per_kind} + {per_kind}? (--lfw-nrof-folds {held})"
        else:
            problem += ": correct the header, or give --lfw-nrof-folds"
    elif folds < 2:
        problem = (
            f"its header {shown!r} declares {folds} fold: cross-validation needs at least 2 "
            "(each fold's threshold is chosen on the others)"
        )
    if problem and strict:
        raise DataError(f"{pairs_file}: {problem}")
    if problem:
        _warn_once(f"{pairs_file}: {problem}")
    return folds


@functools.lru_cache(maxsize=64)
def _warn_once(message: str) -> None:
    """A warning said once per process (per-epoch LFW would repeat it every epoch)."""
    logger.warning("%s", message)


def pair_images(pairs: list[Pair]) -> list[Path]:
    """Every image the pairs name, once, sorted: what to embed for the protocol."""
    return sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
