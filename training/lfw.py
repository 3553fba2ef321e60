"""The LFW verification protocol: pairs.txt, 10-fold accuracy, VAL@FAR, AUC, EER, ROC plot.

Distances are squared Euclidean between L2-normalised embeddings (0..4), as in the
FaceNet project's ``lfw.evaluate``. Folds are consecutive blocks of pairs in file order
(pairs.txt is written fold by fold), never shuffled.

- accuracy: for each fold, the threshold (grid 0, 0.01, ..., 3.99) with the best accuracy
  on the *other* folds is applied to this fold; mean ± std over folds.
- VAL@FAR: for each fold, the threshold at which the other folds' false accept rate
  reaches the target is applied to this fold; VAL and FAR are means over folds. FAR is a
  step function of the threshold (0.001 grid); as the original's ``calculate_val``, the
  threshold is interpolated between the *last* grid point still below the target and the
  first at or above it, so it sits just below the next false accept.
- ROC (TPR, FPR averaged over folds at each threshold), AUC (trapezoids), EER (where
  FPR = 1 - TPR, interpolated), best threshold (best accuracy on all pairs).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.base import brief
from training.data import DataError

LFW_PAIRS = 6000  # LFW's pairs.txt: 10 folds of 300 same and 300 different pairs

logger = logging.getLogger(__name__)

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


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


def _rates(dist: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(true positive rate, false positive rate, accuracy) of ``dist < threshold``."""
    predict = dist < threshold
    tp = np.sum(predict & same)
    fp = np.sum(predict & ~same)
    tn = np.sum(~predict & ~same)
    positives, negatives = np.sum(same), np.sum(~same)
    tpr = tp / positives if positives else 0.0
    fpr = fp / negatives if negatives else 0.0
    return float(tpr), float(fpr), float((tp + tn) / len(dist))


def _far_threshold(
    dist: np.ndarray, same: np.ndarray, far_target: float, grid: np.ndarray
) -> float:
    """The threshold where the false accept rate of ``dist < threshold`` reaches
    ``far_target``, 0 when it never does (both as the original's ``calculate_val``).

    FAR over the grid is non-decreasing with long runs of one value; interpolating over the
    raw arrays spans the last threshold of a run to the first of the next, as the original's
    scipy ``interp1d(kind='slinear')`` did. Keeping the first threshold of each run instead
    put the threshold low (VAL some points lower, and with few pairs near threshold 0)."""
    fars = np.array([_rates(dist, same, t)[1] for t in grid])
    if fars.max() < far_target:
        return 0.0
    return float(np.interp(far_target, fars, grid))


@dataclass(frozen=True)
class LfwResult:
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: tuple[float, ...]
    val_mean: float
    val_std: float
    far_mean: float
    far_target: float
    auc: float
    eer: float
    best_threshold: float
    tpr: tuple[float, ...]
    fpr: tuple[float, ...]
    nrof_pairs: int = 0  # LFW's pairs.txt has 6,000; fewer is a subset, not the protocol
    # the mean over the folds of the threshold that keeps FAR at far_target on the others
    # (0: not measured, reports made before it): a stricter default than best_threshold
    far_threshold: float = 0.0
    # how the distances were taken (validate's original options): best_threshold is on the
    # daemon's scale (squared L2 between unit embeddings) only with metric 0 and no flips
    distance_metric: int = 0
    use_flipped_images: bool = False
    subtract_mean: bool = False

    def summary(self) -> str:
        """One line of the figures; from fewer pairs than LFW's own, how many (a small
        subset's figures swing from run to run)."""
        subset = f" ({self.nrof_pairs} pairs)" if 0 < self.nrof_pairs < LFW_PAIRS else ""
        return (
            f"accuracy {self.accuracy_mean:.4f} ± {self.accuracy_std:.4f}, "
            f"VAL {self.val_mean:.4f} ± {self.val_std:.4f} @ FAR {self.far_mean:.5f}, "
            f"AUC {self.auc:.4f}, EER {self.eer:.4f}, best threshold {self.best_threshold:.2f}"
            f"{subset}"
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def evaluate_distances(
    dist: np.ndarray,
    same: np.ndarray,
    nrof_folds: int = 10,
    far_target: float = 1e-3,
    thresholds: np.ndarray = ACCURACY_THRESHOLDS,
    val_thresholds: np.ndarray = VAL_THRESHOLDS,
) -> LfwResult:
    """The protocol on precomputed pair distances (see the module doc)."""
    dist, same = np.asarray(dist, dtype=np.float64), np.asarray(same, dtype=bool)
    check_folds(same, nrof_folds)
    folds = fold_slices(len(dist), nrof_folds)
    accuracies, vals, fars, far_thresholds = [], [], [], []
    tprs = np.zeros((len(folds), len(thresholds)))
    fprs = np.zeros_like(tprs)
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(dist)), test)
        train_acc = [_rates(dist[train], same[train], t)[2] for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        for j, t in enumerate(thresholds):
            tprs[k, j], fprs[k, j], _ = _rates(dist[test], same[test], t)
        accuracies.append(_rates(dist[test], same[test], best)[2])
        t_far = _far_threshold(dist[train], same[train], far_target, val_thresholds)
        val, far, _ = _rates(dist[test], same[test], t_far)
        far_thresholds.append(t_far)
        vals.append(val)
        fars.append(far)
    tpr, fpr = tprs.mean(axis=0), fprs.mean(axis=0)
    all_acc = [_rates(dist, same, t)[2] for t in thresholds]
    return LfwResult(
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        fold_accuracies=tuple(accuracies),
        val_mean=float(np.mean(vals)),
        val_std=float(np.std(vals)),
        far_mean=float(np.mean(fars)),
        far_target=far_target,
        auc=auc(fpr, tpr),
        eer=equal_error_rate(fpr, tpr),
        best_threshold=float(thresholds[int(np.argmax(all_acc))]),
        tpr=tuple(float(v) for v in tpr),
        fpr=tuple(float(v) for v in fpr),
        nrof_pairs=len(dist),
        far_threshold=float(np.mean(far_thresholds)),
    )


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids over FPR, with (0,0) and (1,1) added)."""
    order = np.lexsort((tpr, fpr))
    x = np.concatenate([[0.0], np.asarray(fpr)[order], [1.0]])
    y = np.concatenate([[0.0], np.asarray(tpr)[order], [1.0]])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The FPR where FPR = 1 - TPR, interpolated between ROC points."""
    order = np.lexsort((tpr, fpr))
    x = np.concatenate([[0.0], np.asarray(fpr)[order], [1.0]])
    y = np.concatenate([[0.0], np.asarray(tpr)[order], [1.0]])
    gap = 1.0 - y - x  # decreasing along the curve; the EER is its zero
    k = int(np.flatnonzero(gap <= 0)[0])
    if k == 0 or gap[k] == 0:
        return float(x[k])
    w = gap[k - 1] / (gap[k - 1] - gap[k])
    return float(x[k - 1] + w * (x[k] - x[k - 1]))


def pair_images(pairs: list[Pair]) -> list[Path]:
    """Every image the pairs name, once, sorted: what to embed for the protocol."""
    return sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})


def evaluate_embedded(
    pairs: list[Pair],
    images: list[Path],
    embeddings: np.ndarray,
    nrof_folds: int = 10,
    distance_metric: int = 0,
    subtract_mean: bool = False,
) -> LfwResult:
    """The protocol on ``embeddings`` of ``images`` (row i embeds images[i])."""
    row = {p: i for i, p in enumerate(images)}
    a = embeddings[[row[p.path_a] for p in pairs]]
    b = embeddings[[row[p.path_b] for p in pairs]]
    same = np.array([p.same for p in pairs])
    distances = pair_distances(a, b, distance_metric, subtract_mean)
    result = evaluate_distances(distances, same, nrof_folds)
    return dataclasses.replace(result, distance_metric=distance_metric, subtract_mean=subtract_mean)


def pair_distances(
    emb_a: np.ndarray, emb_b: np.ndarray, distance_metric: int = 0, subtract_mean: bool = False
) -> np.ndarray:
    """Per pair, as the original validate_on_lfw.py: metric 0 the squared euclidean
    distance, 1 the angle over pi (0 .. 1); ``subtract_mean`` first takes the mean of all
    the pairs' embeddings away (the original does it per fold's training half; over all
    pairs here, which uses no labels)."""
    a, b = np.asarray(emb_a, np.float64), np.asarray(emb_b, np.float64)
    if subtract_mean:
        mean = np.concatenate([a, b]).mean(axis=0)
        a, b = a - mean, b - mean
    if distance_metric == 0:
        return np.sum((a - b) ** 2, axis=1)
    if distance_metric == 1:
        cos = np.sum(a * b, axis=1) / np.maximum(
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
        )
        return np.arccos(np.clip(cos, -1.0, 1.0)) / np.pi
    raise ValueError(f"distance_metric {distance_metric}: 0 (squared euclidean) or 1 (angular)")


def plot_roc(result: LfwResult, path: str | Path, title: str = "LFW ROC") -> Path:
    """Write the ROC curve as a PNG (matplotlib when installed, else OpenCV drawing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_roc_cv2(result, path, title)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(result.fpr, result.tpr, label=f"AUC {result.auc:.4f}")
    ax.plot([0, 1], [1, 0], ":", color="grey", label=f"EER {result.eer:.4f}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_roc_cv2(result: LfwResult, path: Path, title: str) -> Path:
    size, pad = 500, 50
    canvas = np.full((size, size, 3), 255, np.uint8)
    span = size - 2 * pad

    def to_px(x: float, y: float) -> tuple[int, int]:
        return int(pad + x * span), int(size - pad - y * span)

    cv2.rectangle(canvas, to_px(0, 0), to_px(1, 1), (0, 0, 0), 1)
    cv2.line(canvas, to_px(0, 1), to_px(1, 0), (160, 160, 160), 1)
    order = np.argsort(result.fpr, kind="stable")
    points = np.array([to_px(result.fpr[i], result.tpr[i]) for i in order], np.int32)
    cv2.polylines(canvas, [points], False, (200, 80, 0), 2)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, title, (pad, 30), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        canvas,
        f"AUC {result.auc:.4f}  EER {result.eer:.4f}",
        (pad + 10, size - pad - 10),
        font,
        0.5,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(canvas, "FPR", (size // 2 - 15, size - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, "TPR", (5, size // 2), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"{path}: cannot write the ROC plot")
    return path
