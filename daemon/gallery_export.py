"""`gallery export` and `gallery import`: a gallery's people and embeddings in one file,
JSON (readable) or NPZ (numpy arrays), owner-only (biometric data). An export is the
gallery's backup: it imports into a new gallery, or into one of the same model elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.gallery import Enrollment, Gallery, GalleryError, check_threshold
from engines.base import brief, finite_number, sync_folder

FORMATS = (".json", ".npz")
JSON_FORMAT, JSON_VERSION = "facewatch-gallery", 1


def write(gallery_path: Path, target: Path, force: bool) -> tuple[int, int]:
    """Export the gallery at ``gallery_path`` to ``target`` (its suffix says the format), written
    aside and moved into place (never half a file); returns (people, embeddings)."""
    suffix = _format(target)
    _check_target(target, gallery_path, force)
    with Gallery.open(gallery_path) as gallery:
        people = gallery.identities()
        vectors, owners, sources, created = gallery.embeddings()
        header = {
            "model_id": gallery.model_id,
            "embedding_size": gallery.embedding_size,
            "threshold": gallery.threshold,
            "distance": "squared euclidean on L2-normalised embeddings",
        }
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise GalleryError(f"{target}: cannot write the export: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if suffix == ".npz":
                np.savez(
                    handle,
                    vectors=vectors,
                    names=np.array(owners, dtype=str),
                    source_sha256=np.array(sources, dtype=str),
                    created=np.array(created, dtype=str),
                    identity_names=np.array([p.name for p in people], dtype=str),
                    identity_thresholds=np.array(
                        [np.nan if p.threshold is None else p.threshold for p in people],
                        np.float32,
                    ),
                    header=np.array(json.dumps(header)),
                )
            else:
                by_name: dict[str, list[dict[str, Any]]] = {p.name: [] for p in people}
                for vector, owner, source, when in zip(
                    vectors, owners, sources, created, strict=True
                ):
                    by_name[owner].append(
                        {"vector": [float(v) for v in vector], "source_sha256": source,
                         "created": when}
                    )  # fmt: skip
                identities = [
                    {"name": p.name, "threshold": p.threshold, "created": p.created,
                     "updated": p.updated, "embeddings": by_name[p.name]}
                    for p in people
                ]  # fmt: skip
                record = {"format": JSON_FORMAT, "version": JSON_VERSION, **header}
                handle.write(json.dumps({**record, "identities": identities}).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, target)
        sync_folder(target.parent)
    finally:
        part.unlink(missing_ok=True)
    return len(people), len(vectors)


@dataclass(frozen=True)
class Export:
    """What an export holds, ready to enroll."""

    model_id: str
    embedding_size: int
    threshold: float
    faces: list[Enrollment]
    thresholds: dict[str, float]  # the people with their own


def read(path: Path) -> Export:
    """An export written by ``write``; GalleryError naming the file and what is wrong."""
    suffix = _format(path)
    try:
        if suffix == ".npz":
            return _read_npz(path)
        return _read_json(path)
    except (EOFError, zipfile.BadZipFile) as exc:  # an empty or cut .npz
        raise GalleryError(f"{path}: not a gallery export `gallery export` wrote ({exc})") from None
    except OSError as exc:
        raise GalleryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:  # json's, numpy's, a missing field
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise GalleryError(
            f"{path}: not a gallery export `gallery export` wrote ({what})"
        ) from None
    except GalleryError as exc:  # a threshold no gallery takes
        raise GalleryError(f"{path}: {exc}") from None


def _read_json(path: Path) -> Export:
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or record.get("format") != JSON_FORMAT:
        raise ValueError(f"its format is not {JSON_FORMAT!r}")
    if record.get("version") != JSON_VERSION:
        raise ValueError(f"version {record.get('version')!r}; this facewatch reads {JSON_VERSION}")
    faces, thresholds = [], {}
    for person in record["identities"]:
        name = str(person["name"])
        if person.get("threshold") is not None:
            thresholds[name] = _threshold(person["threshold"], f"{brief(name)}: threshold")
        for face in person["embeddings"]:
            vector = np.asarray(face["vector"], np.float32)
            faces.append(Enrollment(name, vector, str(face["source_sha256"])))
    return _export(record, faces, thresholds)


def _read_npz(path: Path) -> Export:
    with np.load(path, allow_pickle=False) as arrays:
        header = json.loads(str(arrays["header"]))
        vectors = np.asarray(arrays["vectors"], np.float32)
        owners, sources = arrays["names"].tolist(), arrays["source_sha256"].tolist()
        if vectors.ndim != 2 or not len(owners) == len(sources) == len(vectors):
            raise ValueError("its vectors, names and sources differ in number")
        thresholds = {
            str(name): _threshold(float(value), f"{brief(name)}: threshold")
            for name, value in zip(
                arrays["identity_names"].tolist(), arrays["identity_thresholds"], strict=True
            )
            if not math.isnan(value)  # NaN: the default
        }
    faces = [
        Enrollment(str(owner), vector, str(source))
        for owner, vector, source in zip(owners, vectors, sources, strict=True)
    ]
    return _export(header, faces, thresholds)


def _export(
    header: dict[str, Any], faces: list[Enrollment], thresholds: dict[str, float]
) -> Export:
    return Export(
        str(header["model_id"]),
        int(header["embedding_size"]),
        _threshold(header["threshold"], "default threshold"),
        faces,
        thresholds,
    )


def _threshold(value: Any, what: str) -> float:
    """A threshold read from an export, when it is a number the gallery takes (the rule of
    ``check_threshold``); else GalleryError saying what it is."""
    number = finite_number(value)
    if number is None:
        raise GalleryError(f"{what} {brief(value)} is not a finite number")
    return check_threshold(number, what)


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise GalleryError(
            f"{path}: say the format by the suffix: .json (readable) or .npz (numpy arrays)"
        )
    return suffix


def _check_target(target: Path, gallery: Path, force: bool) -> None:
    if target.is_dir():
        raise GalleryError(f"{target}: a folder; name the export file (FILE.json or FILE.npz)")
    if target.exists() and gallery.exists() and target.samefile(gallery):
        raise GalleryError(f"{target}: that is the gallery itself; export to another file")
    if target.exists() and not force:
        raise GalleryError(f"{target}: already exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise GalleryError(f"{target}: no folder {target.parent}")
