"""What `facewatch train export` reads besides the checkpoint: the face crops of its parity
checks, and the LFW figures (an lfw.json) to record in the sidecar and card."""

from __future__ import annotations

from pathlib import Path


def parity_crops(folder: Path | None, count: int, size: int) -> object:
    import numpy as np

    from engines.image_files import PHOTO_SUFFIXES, folder_files
    from training.data import crop_square, load_rgb

    if folder is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    if not folder.is_dir():
        raise FileNotFoundError(f"--parity-images {folder}: no such folder")
    found = folder_files(folder, PHOTO_SUFFIXES).files
    paths = found[:: max(1, len(found) // count)][:count]  # spread over the folder's people
    if not paths:
        raise FileNotFoundError(f"{folder}: no images for the parity check")
    return np.stack([crop_square(load_rgb(p), size, None) for p in paths])


def lfw_report(report: Path, model: Path) -> dict[str, object]:
    """The figures of ``report`` (an lfw.json), which must have been measured on ``model``."""
    import json

    from engines.base import file_sha256

    try:
        figures = json.loads(report.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--lfw-report {report}: cannot read it ({exc})") from None
    measured = figures.get("model_sha256")
    if not measured:
        raise ValueError(
            f"--lfw-report {report}: does not say which model file it measured (an older "
            f"facewatch wrote it): validate again (facewatch train validate {model} --out-dir DIR)"
        )
    if measured != file_sha256(model):
        same_path = Path(str(figures.get("model"))).resolve() == Path(model).resolve()
        what = (
            "before it changed (its SHA-256 differs now: trained on since?)"
            if same_path
            else f"not on {model}"
        )
        raise ValueError(
            f"--lfw-report {report}: measured on {figures.get('model')} {what}; validate "
            f"{model} (facewatch train validate {model} --out-dir DIR)"
        )
    return {k: v for k, v in figures.items() if k not in ("tpr", "fpr", "model", "model_sha256")}
