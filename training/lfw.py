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

The pairs files and their folds: training/lfw_pairs.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from training.lfw_pairs import Pair, check_folds, fold_slices

LFW_PAIRS = 6000  # LFW's pairs.txt: 10 folds of 300 same and 300 different pairs

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


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
