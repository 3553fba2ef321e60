"""The model card of an exported FaceNet model, written entirely from its sidecar: ``<model>.md``
beside the ONNX model (models/facenet/facenet.md; training/export_facenet.py writes it)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from engines.base import ModelMetadata
from engines.facenet import starting_threshold

TRAINED_HERE = "facewatch training (Inception-ResNet-v1, FaceNet)"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_epochs(epochs: int | None) -> str:
    return "n/a" if epochs is None else str(epochs)


def _matching(extra: dict[str, Any]) -> list[str]:
    """How faces are matched, and the threshold a new gallery starts at, which holds per
    comparison (LFW's pairs): a gallery compares a stranger with every enrolled face."""
    lfw = extra.get("lfw") or {}
    start = starting_threshold(extra)
    text = "Matching: squared Euclidean distance between embeddings; same person below the "
    if start is None:
        text += "threshold. A new gallery starts at facewatch's default threshold (the sidecar "
        text += "has no LFW threshold on that scale)."
        return textwrap.wrap(text, 88)
    if lfw.get("far_threshold"):
        text += f"threshold. A new gallery starts at {start:.3f}, LFW's threshold for a false "
        text += f"accept rate of {lfw.get('far_target', 1e-3):g}"
    else:
        text += f"threshold. A new gallery starts at {start:.3f}, LFW's best-accuracy one"
    text += (
        ", a rate per comparison: a gallery compares a stranger with every enrolled face, so "
        "the more faces, the more strangers are named ("
    )
    if lfw.get("far_threshold") and lfw.get("best_threshold"):
        text += f"LFW's best-accuracy threshold, {lfw['best_threshold']:.2f}, names more; "
    text += "`facewatch gallery calibrate` chooses a threshold from the enrolled people)."
    return textwrap.wrap(text, 88)


def _groups(extra: dict[str, Any]) -> list[str]:
    """The card's section on differences between groups of people (bench/bench_fairness.py's
    figures and what they mean), kept in the sidecar as its lines so that a card written
    again (``train validate --record``) keeps it, and a new model's export does not."""
    lines = extra.get("groups_card")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        return []
    return ["", *lines]


def _preprocessing(meta: ModelMetadata) -> str:
    """What is done to a crop's pixels before the network sees them."""
    return (
        "per-image prewhitened"
        if meta.extra.get("prewhiten")
        else f"(x - {meta.mean}) / {meta.std}"
    )


def _storage(extra: dict[str, Any]) -> str:
    """How the weights are stored (fp32, fp16 or int8), with what that cost."""
    storage = "fp32"
    if extra.get("int8"):
        storage = f"int8, calibrated (min cosine to fp32 {extra.get('int8_min_cosine', float('nan')):.4f})"
    if extra.get("fp16_weights"):
        storage = f"fp16 (max abs diff {extra.get('fp16_max_abs_diff', float('nan')):.2e})"
    return storage


def _network(extra: dict[str, Any]) -> str:
    """The card's opening words: which network it is."""
    return (
        "Face embedding model (dlib's ResNet: 29 convolutions) "
        if extra.get("architecture") == "dlib-resnet"
        else "FaceNet face embedding model (Inception-ResNet-v1) "
    )


def _face_crop(extra: dict[str, Any]) -> str:
    """How the face crop is made from the detection (margin, or a 5-landmark warp)."""
    return (
        "similarity warp of the 5 landmarks onto "
        + ("its own template" if extra.get("landmarks") else "the reference template")
        if extra.get("alignment") == "similarity"
        else f"{extra.get('alignment')} (margin {extra.get('margin')} px)"
    )


def model_card(meta: ModelMetadata, onnx_path: Path) -> str:
    """A short markdown card, entirely from the sidecar."""
    lfw = meta.extra.get("lfw") or {}
    folds = len(lfw.get("fold_accuracies", ())) or "n/a"
    acc = "not measured"
    if lfw:
        acc = f"{lfw['accuracy_mean'] * 100:.2f} % ± {lfw['accuracy_std'] * 100:.2f}"
    size_hw = meta.input_size_hw or (0, 0)
    prep = _preprocessing(meta)
    diff = meta.extra.get("parity_max_abs_diff")
    storage = _storage(meta.extra)
    network = _network(meta.extra)
    crop = _face_crop(meta.extra)
    loss = meta.extra.get("loss") or "n/a"
    rows = [
        f"# {meta.name}",
        "",
        network
        + ("trained with facewatch." if meta.source == TRAINED_HERE else f"from {meta.source}."),
        "",
        "| | |",
        "|---|---|",
        f"| file | `{onnx_path.name}` (+ `{onnx_path.with_suffix('.json').name}` sidecar) |",
        f"| input | `image` N x 3 x {size_hw[0]} x {size_hw[1]} RGB, {prep} |",
        f"| output | `embedding` N x {meta.embedding_size}, L2-normalised |",
        f"| face crop | {crop} |",
        f"| training data | {meta.training_data} |",
        f"| licence | {meta.license or 'not stated'} |",
        f"| epochs, loss | {_fmt_epochs(meta.extra.get('epochs'))}, {loss} |",
        f"| LFW accuracy ({folds}-fold) | {acc} |",
        f"| VAL @ FAR=1e-3 | {_fmt(lfw.get('val_mean'))} ± {_fmt(lfw.get('val_std'))} |",
        f"| ONNX Runtime vs PyTorch | max abs diff {'n/a' if diff is None else f'{diff:.2e}'} |",
        f"| weights stored as | {storage} |",
        "",
        *_matching(meta.extra),
        "",
        f"Exported with: `{meta.extra.get('export_command', 'n/a')}`",
    ]
    if not meta.extra.get("int8"):
        rows.append(
            f"For `engines.backend: torch`: `facewatch train torch-program {onnx_path.name}` "
            "writes its program (.pt2) from the weights inside it."
        )
    if lfw.get("command"):
        rows.append(f"LFW measured with: `{lfw['command']}`")
    return "\n".join([*rows, *_groups(meta.extra), ""])
