"""`facewatch train export` replaces a model only once the new one has passed its checks.

The files of the new model (ONNX, sidecar, model card, torch program) are written into a
folder beside ``--out`` (the same file system, so each move is an ``os.replace``), checked
there, and moved into place at the end; a failed check removes the folder and leaves what
was at ``--out`` (the live model the daemon and its galleries use) as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

# the ONNX model first, its sidecar right after it; the card; the torch program
MODEL_FILES = (".onnx", ".json", ".md", ".pt2")


@contextmanager
def staged(out_path: Path) -> Iterator[Path]:
    """Yields where to write the model instead of ``out_path`` (the same file name, in a new
    folder beside it). On a normal exit the files written there move to ``out_path``'s
    names; on an exception nothing moves. The folder is removed either way."""
    if out_path.is_dir():
        raise IsADirectoryError(f"{out_path}: a folder, not a model file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".new", dir=out_path.parent))
    try:
        work = folder / out_path.name
        yield work
        for suffix in MODEL_FILES:
            if work.with_suffix(suffix).is_file():
                os.replace(work.with_suffix(suffix), out_path.with_suffix(suffix))
            elif suffix == ".pt2" and out_path.with_suffix(suffix).is_file():
                logger.warning(
                    "%s is the previous model's torch program: the torch backend refuses it "
                    "with this model (facewatch train torch-program %s writes this one's)",
                    out_path.with_suffix(suffix),
                    out_path,
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def out_refused(out: Path, force: bool) -> str | None:
    """Why a model must not be written at ``out`` (the export commands' --out), or None."""
    if out.is_dir():
        return f"--out {out}: a folder; name the model file (MODEL.onnx) in it"
    if out.suffix.lower() != ".onnx":
        return f"--out {out}: name the file MODEL.onnx (its sidecar is MODEL.json)"
    if out.exists() and not force:
        return (
            f"--out {out}: a model is there already; galleries enrolled with it will be "
            "refused by the new one (other embeddings): --force replaces it, or choose "
            "another --out"
        )
    folder = next(p for p in out.absolute().parents if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return f"--out {out}: cannot be written ({folder} is not a folder this user can write)"
    return None
