"""`facewatch train export` replaces a model only once the new one has passed its checks.

The files of the new model (ONNX, sidecar, model card, torch program) are written into a
folder beside ``--out`` (the same file system, so each move is an ``os.replace``), checked
there, and moved into place at the end; a failed check removes the folder and leaves what
was at ``--out`` (the live model the daemon and its galleries use) as it was. A model it
replaces is kept in a folder of its own (``replaced/`` beside it), with the LFW report
(``lfw/``) that described it, so that it can be put back.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engines.base import file_sha256

logger = logging.getLogger(__name__)

# the ONNX model first, its sidecar right after it; the card; the torch program
MODEL_FILES = (".onnx", ".json", ".md", ".pt2")


@contextmanager
def staged(out_path: Path, backup: Path | None = None) -> Iterator[Path]:
    """Yields where to write the model instead of ``out_path`` (the same file name, in a new
    folder beside it). On a normal exit the files written there move to ``out_path``'s
    names; on an exception nothing moves. The folder is removed either way. ``backup`` (a
    folder that does not exist yet, see ``backup_folder``): the model being replaced is
    kept there, with its LFW report, once the new one has passed its checks."""
    if out_path.is_dir():
        raise IsADirectoryError(f"{out_path}: a folder, not a model file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".new", dir=out_path.parent))
    try:
        work = folder / out_path.name
        yield work
        if backup is not None:
            _keep(out_path, backup)
        for suffix in MODEL_FILES:
            if work.with_suffix(suffix).is_file():
                os.replace(work.with_suffix(suffix), out_path.with_suffix(suffix))
            elif suffix == ".pt2" and out_path.with_suffix(suffix).is_file():
                if backup is not None:  # kept with the model it belongs to
                    out_path.with_suffix(suffix).unlink()
                    continue
                logger.warning(
                    "%s is the previous model's torch program: the torch backend refuses it "
                    "with this model (facewatch train torch-program %s writes this one's)",
                    out_path.with_suffix(suffix),
                    out_path,
                )
        if backup is not None:
            _move_report(out_path, backup)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def backup_folder(out_path: Path) -> Path:
    """Where the model at ``out_path`` is kept when a new one replaces it: a new folder
    ``replaced/STEM-YYYYMMDD-HHMMSS`` beside it (not created here)."""
    stem = f"{out_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = out_path.parent / "replaced" / stem, 1
    while folder.exists():
        n += 1
        folder = out_path.parent / "replaced" / f"{stem}-{n}"
    return folder


def _keep(out_path: Path, backup: Path) -> None:
    """Hard links (copies where the file system has none) of the model at ``out_path`` in
    ``backup``: the live files stay in place until the new ones replace them."""
    backup.mkdir(parents=True)
    for suffix in MODEL_FILES:
        old = out_path.with_suffix(suffix)
        if old.is_file():
            try:
                os.link(old, backup / old.name)
            except OSError:
                shutil.copy2(old, backup / old.name)


def _move_report(out_path: Path, backup: Path) -> None:
    """The LFW report beside the replaced model (``lfw/``, from `train validate --out-dir`)
    goes with it, when it says it measured that model: its figures are not the new one's."""
    report = out_path.parent / "lfw"
    if not (report / "lfw.json").is_file():
        return
    kept = backup / out_path.with_suffix(".onnx").name
    try:
        measured = json.loads((report / "lfw.json").read_text()).get("model_sha256")
    except (OSError, ValueError):
        return
    if measured and kept.is_file() and measured == file_sha256(kept):
        os.replace(report, backup / "lfw")


def restore_command(out_path: Path, backup: Path) -> str:
    """The shell command that puts a kept model back at ``out_path``."""
    return f"mv {shlex.quote(str(backup))}/* {shlex.quote(str(out_path.parent))}/"


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
