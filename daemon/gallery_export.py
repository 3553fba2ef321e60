"""`gallery export` and `gallery import`: a gallery's people and embeddings in one file,
JSON (readable) or NPZ (numpy arrays), owner-only (biometric data). An export is the
gallery's backup: it imports into a new gallery, or into one of the same model elsewhere.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from daemon.gallery import Gallery
from daemon.gallery_check import UNIT_TOLERANCE, check_threshold
from daemon.gallery_file import GalleryError
from daemon.gallery_read import Identity
from daemon.gallery_write import Enrollment
from engines.base import brief, finite_number, is_count, parse_json, read_json, sync_folder

logger = logging.getLogger(__name__)

FORMATS = (".json", ".npz")
JSON_FORMAT, JSON_VERSION = "facewatch-gallery", 1
# the arrays read from an .npz export: (numpy dtype kind, dimensions)
NPZ_MEMBERS = {
    "header": ("U", 0),
    "vectors": ("f", 2),
    "names": ("U", 1),
    "source_sha256": ("U", 1),
    "identity_names": ("U", 1),
    "identity_thresholds": ("f", 1),
}
# how much larger than the .npz file its arrays may be: `gallery export` stores them (no
# larger); a compressed export of real embeddings is about 2x; a zip bomb, thousands
MAX_INFLATION = 16


def write(gallery_path: Path, target: Path, force: bool) -> tuple[int, int]:
    """Export the gallery at ``gallery_path`` to ``target`` (its suffix says the format), written
    aside and moved into place (never half a file); returns (people, embeddings)."""
    suffix = _format(target)
    _check_target(target, gallery_path, force)
    contents = _Contents.read(gallery_path)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise GalleryError(f"{target}: cannot write the export: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if suffix == ".npz":
                contents.save_npz(handle)
            else:
                handle.write(json.dumps(contents.as_json()).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, target)
        sync_folder(target.parent)
    finally:
        part.unlink(missing_ok=True)
    return len(contents.people), len(contents.vectors)


@dataclass(frozen=True)
class _Contents:
    """What an export holds, as read from the gallery: its people, their embeddings (with,
    per row, the owner's name, source hash and time) and the gallery's header."""

    people: list[Identity]
    vectors: np.ndarray
    owners: list[str]
    sources: list[str]
    created: list[str]
    header: dict[str, Any]

    @classmethod
    def read(cls, gallery_path: Path) -> _Contents:
        with Gallery.open(gallery_path) as gallery:
            people = gallery.identities()
            vectors, owners, sources, created = gallery.embeddings()
            header = {
                "model_id": gallery.model_id,
                "embedding_size": gallery.embedding_size,
                "threshold": gallery.threshold,
                "distance": "squared euclidean on L2-normalised embeddings",
            }
        return cls(people, vectors, owners, sources, created, header)

    def save_npz(self, handle: BinaryIO) -> None:
        people = self.people
        np.savez(
            handle,
            vectors=self.vectors,
            names=np.array(self.owners, dtype=str),
            source_sha256=np.array(self.sources, dtype=str),
            created=np.array(self.created, dtype=str),
            identity_names=np.array([p.name for p in people], dtype=str),
            identity_thresholds=np.array(
                [np.nan if p.threshold is None else p.threshold for p in people], np.float32
            ),
            header=np.array(json.dumps(self.header)),
        )

    def as_json(self) -> dict[str, Any]:
        """The JSON export's record: each person with their embeddings."""
        by_name: dict[str, list[dict[str, Any]]] = {p.name: [] for p in self.people}
        for vector, owner, source, when in zip(
            self.vectors, self.owners, self.sources, self.created, strict=True
        ):
            by_name[owner].append(
                {"vector": [float(v) for v in vector], "source_sha256": source, "created": when}
            )
        identities = [
            {"name": p.name, "threshold": p.threshold, "created": p.created,
             "updated": p.updated, "embeddings": by_name[p.name]}
            for p in self.people
        ]  # fmt: skip
        record = {"format": JSON_FORMAT, "version": JSON_VERSION, **self.header}
        return {**record, "identities": identities}


@dataclass(frozen=True)
class Export:
    """What an export holds, ready to enroll."""

    model_id: str
    embedding_size: int
    threshold: float
    faces: list[Enrollment]
    thresholds: dict[str, float]  # the people with their own


def read(path: Path) -> Export:
    """An export written by ``write``; GalleryError naming the file and what is wrong, for
    any file (damaged, cut short, hand-made, hostile). Memory grows with the file's size
    only: an .npz's arrays are sized from their headers before they are read, and may be
    at most ``MAX_INFLATION`` times the file."""
    suffix = _format(path)
    try:
        if suffix == ".npz":
            return _read_npz(path)
        return _read_json(path)
    except OSError as exc:
        raise GalleryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:  # what is wrong; a missing field
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise GalleryError(
            f"{path}: not a gallery export `gallery export` wrote ({what})"
        ) from None
    except GalleryError as exc:  # a threshold no gallery takes
        raise GalleryError(f"{path}: {exc}") from None


def _read_json(path: Path) -> Export:
    record = read_json(path)
    if not isinstance(record, dict) or record.get("format") != JSON_FORMAT:
        raise ValueError(f"its format is not {JSON_FORMAT!r}")
    if record.get("version") != JSON_VERSION:
        raise ValueError(
            f"version {brief(record.get('version'))}; this facewatch reads {JSON_VERSION}"
        )
    model_id, size, threshold = _header(record)
    names, rows, sources, created, thresholds = [], [], [], [], {}
    for person in _objects(record["identities"], "identities"):
        name = _text(person["name"], "a name")
        if person.get("threshold") is not None:
            thresholds[name] = _threshold(person["threshold"], f"{brief(name)}: threshold")
        for face in _objects(person["embeddings"], "embeddings"):
            names.append(name)
            rows.append(face["vector"])
            sources.append(_text(face["source_sha256"], "a source_sha256"))
            created.append(_when(face.get("created")))
    vectors = _embeddings(_json_vectors(rows, size))
    faces = [Enrollment(*face) for face in zip(names, vectors, sources, created, strict=True)]
    return Export(model_id, size, threshold, faces, thresholds)


def _read_npz(path: Path) -> Export:
    budget = MAX_INFLATION * path.stat().st_size
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name, (kind, ndim) in NPZ_MEMBERS.items():
                arrays[name] = _npz_array(archive, name, kind, ndim, budget)
                budget -= arrays[name].nbytes
            if "created.npy" in archive.namelist():  # (exports before it lack it)
                arrays["created"] = _npz_array(archive, "created", "U", 1, budget)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ValueError(f"its zip cannot be unpacked: {exc}") from None  # damaged, cut short
    except RuntimeError:  # zipfile's, for a member that needs a password
        raise ValueError("its zip is encrypted") from None
    model_id, size, threshold = _header(parse_json(str(arrays["header"])))
    vectors, owners, sources = arrays["vectors"], arrays["names"], arrays["source_sha256"]
    if vectors.shape[1:] != (size,) or not len(owners) == len(sources) == len(vectors):
        raise ValueError(f"its vectors {vectors.shape}, names and sources do not agree")
    people, limits = arrays["identity_names"], arrays["identity_thresholds"]
    if len(people) != len(limits):
        raise ValueError("its identity names and thresholds differ in number")
    thresholds = {
        str(name): _threshold(float(value), f"{brief(name)}: threshold")
        for name, value in zip(people.tolist(), limits.tolist(), strict=True)
        if not math.isnan(value)  # NaN: the default
    }
    created: list[str | None] = [None] * len(vectors)
    if len(arrays.get("created", ())) == len(vectors):
        created = [_when(str(when)) for when in arrays["created"].tolist()]
    faces = [
        Enrollment(str(owner), vector, str(source), when)
        for owner, vector, source, when in zip(
            owners.tolist(), _embeddings(vectors), sources.tolist(), created, strict=True
        )
    ]
    return Export(model_id, size, threshold, faces, thresholds)


def _when(value: object) -> str | None:
    """A face's enroll time as an export gives it (an ISO time), else None (now)."""
    if not isinstance(value, str):
        return None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return None
    return value


def _npz_array(
    archive: zipfile.ZipFile, name: str, kind: str, ndim: int, budget: int
) -> np.ndarray:
    """The array ``name`` of an .npz, once its .npy header says it is of ``kind`` (a numpy
    dtype kind), has ``ndim`` dimensions and fits in ``budget`` bytes (checked before numpy
    allocates it: a few bytes can declare terabytes)."""
    try:
        member = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise ValueError(f"it has no {name} array") from None
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"its {name} array is in .npy version {version}, not 1.0 or 2.0")
        read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
        try:
            shape, _, dtype = read_header(stream)
        except (SyntaxError, tokenize.TokenError):  # numpy's reading of an old header
            raise ValueError(f"its {name} array has a damaged .npy header") from None
    if dtype.kind != kind or len(shape) != ndim or min(shape, default=0) < 0:
        raise ValueError(f"its {name} array is {dtype.str} of shape {brief(shape)}")
    if math.prod(shape) * dtype.itemsize > budget:
        raise ValueError(
            f"its {name} array of shape {brief(shape)} would be over {MAX_INFLATION}x the file's size"
        )
    with archive.open(member) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def _header(header: Any) -> tuple[str, int, float]:
    """(model id, embedding size, default threshold) of an export's header, checked."""
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    model_id, size = header["model_id"], header["embedding_size"]
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"model_id {brief(model_id)} is not a model's name")
    if not is_count(size):
        raise ValueError(f"embedding_size {brief(size)} is not a whole number of 1 or more")
    return model_id, size, _threshold(header["threshold"], "default threshold")


def _threshold(value: Any, what: str) -> float:
    """A threshold read from an export, when it is a number the gallery takes (the rule of
    ``check_threshold``); else GalleryError saying what it is."""
    number = finite_number(value)
    if number is None:
        raise GalleryError(f"{what} {brief(value)} is not a finite number")
    return check_threshold(number, what)


def _objects(items: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"its {what} are not a list of JSON objects")
    return items


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} that is not text: {brief(value)}")
    return value


def _json_vectors(rows: list[Any], size: int) -> np.ndarray:
    """(M, size) of JSON embeddings: lists of ``size`` numbers, else ValueError."""
    for row in rows:
        if not (
            isinstance(row, list) and len(row) == size and all(type(v) in (int, float) for v in row)
        ):
            raise ValueError(f"an embedding that is not a list of {size} numbers: {brief(row)}")
    try:
        return np.array(rows, np.float64).reshape(len(rows), size)
    except OverflowError:  # an integer of hundreds of digits
        raise ValueError("an embedding with a number too large") from None


def _embeddings(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as float32, or ValueError unless each is a unit vector there, as every
    embedding FaceNet makes is (1e39 overflows float32; a long vector would be the nearest
    to every face, and named them all)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = vectors.astype(np.float32)
        norms = np.linalg.norm(out.astype(np.float64), axis=1)
    if not np.all(np.isfinite(out)):
        raise ValueError("an embedding with values that are not finite float32 numbers")
    off = np.abs(norms - 1.0) > UNIT_TOLERANCE
    if np.any(off):
        raise ValueError(f"an embedding of length {norms[off][0]:.4g}, not a unit vector")
    return out


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
