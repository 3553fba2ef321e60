"""What an export says of the model's quality: LFW figures rough or missing, embeddings
collapsed to one point, and a model that must not replace a clearly better one (``train
export``, ``train validate --record``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineError, ModelMetadata, finite_number
from engines.facenet import DEFAULT_THRESHOLD, starting_threshold
from training.embedders import OnnxEmbedder
from training.lfw import LFW_PAIRS

logger = logging.getLogger(__name__)


LFW_ROUGH_ACCURACY = 0.7


def warn_rough_lfw(onnx_path: Path, lfw: dict[str, Any] | None) -> list[str]:
    """Warn (and return why) when LFW figures recorded in a model's sidecar are rough: from
    fewer pairs than the protocol's, or from a model near chance. Their best threshold is
    what a new gallery made with the model starts from."""
    if not lfw:
        return []
    pairs, accuracy = int(lfw.get("nrof_pairs") or 0), float(lfw.get("accuracy_mean", 0.0))
    reasons = []
    if pairs < LFW_PAIRS:
        reasons.append(f"from {pairs or 'an unstated number of'} pairs, not LFW's {LFW_PAIRS}")
    if accuracy < LFW_ROUGH_ACCURACY:
        reasons.append(f"accuracy {accuracy:.3f}, below {LFW_ROUGH_ACCURACY}")
    if reasons:
        logger.warning(
            "%s: the LFW figures recorded in its sidecar are rough (%s): new galleries made "
            "with this model start at a threshold of %s taken from them; check it, or set the "
            "gallery's threshold yourself",
            onnx_path,
            "; ".join(reasons),
            starting_threshold({"lfw": lfw}),
        )
    return reasons


def warn_unmeasured(onnx_path: Path, replaced: dict[str, Any] | None) -> None:
    """Warn that a model exported without LFW figures is of unknown quality, and that new
    galleries made with it start at facewatch's default threshold, not one of its own;
    ``replaced``: the LFW figures of the model it replaced, if any."""
    old = _accuracy(replaced)
    logger.warning(
        "%s has no LFW figures: how well it tells faces apart is unknown%s, and new galleries "
        "made with it start at facewatch's default threshold %s (the usual one of "
        "facenet-pytorch's published weights, not one measured for this model: a model you "
        "trained can name every stranger at it); measure and record them: facewatch train "
        "validate %s --align --lfw-dir DIR --lfw-pairs pairs.txt --record",
        onnx_path,
        f" (the model it replaced: LFW accuracy {_shown(old)})" if old else "",
        DEFAULT_THRESHOLD,
        onnx_path,
    )


COLLAPSED_SPREAD = (
    0.01  # squared L2; the shipped model: 0.39 over 16 LFW photos, a collapsed one: 1e-4
)


def warn_collapsed(onnx_path: Path, faces: np.ndarray) -> float:
    """Warn when the model maps the face crops ``faces`` (uint8 RGB, of several people) to
    nearly one point: every face would match every other. Returns the largest squared
    distance between two of their embeddings."""
    embeddings = OnnxEmbedder(onnx_path).embed_rgb(faces)
    spread = float(((embeddings[:, None] - embeddings[None]) ** 2).sum(-1).max())
    if len(faces) > 1 and spread < COLLAPSED_SPREAD:
        logger.warning(
            "%s: its embeddings of %d --parity-images faces all lie within a squared distance "
            "of %.2g of each other: it maps every face to nearly one point (a collapsed or "
            "untrained network), so any face would match anyone enrolled; do not use it "
            "(train longer, or check the run's loss and data)",
            onnx_path,
            len(faces),
            spread,
        )
    return spread


CLEARLY_WORSE = 0.01  # LFW accuracy points (or the replaced model's fold std, when larger)
EVEN_IF_WORSE = "--even-if-worse"


def _accuracy(lfw: dict[str, Any] | None) -> tuple[float, float, int] | None:
    """(accuracy, its std over folds, pairs) of LFW figures, or None without them."""
    if not isinstance(lfw, dict):
        return None
    accuracy = finite_number(lfw.get("accuracy_mean"))
    if accuracy is None:
        return None
    std = finite_number(lfw.get("accuracy_std")) or 0.0
    return accuracy, std, int(finite_number(lfw.get("nrof_pairs")) or 0)


def _shown(figures: tuple[float, float, int]) -> str:
    accuracy, std, pairs = figures
    return f"{accuracy:.3f} ± {std:.3f} ({pairs or 'an unstated number of'} pairs)"


def sidecar_lfw(onnx_path: Path) -> dict[str, Any] | None:
    """The LFW figures in the sidecar of the model at ``onnx_path``; None without them (or
    without a model facewatch reads there)."""
    try:
        lfw = ModelMetadata.load(onnx_path).extra.get("lfw")
    except EngineError:
        return None
    return lfw if isinstance(lfw, dict) else None


def replacement_refused(out_path: Path, lfw: dict[str, Any] | None) -> str | None:
    """Why the new model (its LFW figures ``lfw``) must not replace the model at ``out_path``
    without --even-if-worse: the one there has recorded LFW figures, and the new one's
    accuracy is lower by more than CLEARLY_WORSE (or the old figures' std, when larger), or
    its figures come from fewer pairs (80 pairs at 1.000 cannot show a model as good as
    6000 at 0.987). None when either has no figures (an unmeasured model is warned about,
    not refused)."""
    old, new = _accuracy(sidecar_lfw(out_path)), _accuracy(lfw)
    if old is None or new is None:  # nothing to compare: an unmeasured model is warned about
        return None
    if new[2] < old[2]:
        return (
            f"--out {out_path}: this model's LFW figures, {_shown(new)}, come from fewer pairs "
            f"than those of the one there, {_shown(old)}: they cannot show it is as good; "
            "measure it on the same pairs (`facewatch train validate MODEL --align --lfw-dir "
            f"DIR --lfw-pairs pairs.txt --record`), or {EVEN_IF_WORSE} replaces it anyway (it "
            f"is kept under {out_path.parent / 'replaced'}), or choose another --out"
        )
    margin = max(CLEARLY_WORSE, old[1])
    if new[0] < old[0] - margin:
        return (
            f"--out {out_path}: this model is clearly worse than the one there: LFW accuracy "
            f"{_shown(new)} against {_shown(old)} (lower by more than {margin:.3f}); the daemon "
            f"and enroll would use it from then on; {EVEN_IF_WORSE} replaces it anyway (it "
            f"is kept under {out_path.parent / 'replaced'}), or choose another --out"
        )
    return None
