"""`facewatch gallery list | remove | rename | threshold | export | calibrate`.

The gallery file: ``--gallery PATH``, else $FACEWATCH_GALLERY, else
``$XDG_DATA_HOME/facewatch/gallery.sqlite`` (``~/.local/share/facewatch/gallery.sqlite``).
None of these commands needs the FaceNet model: they work on the stored embeddings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from daemon.gallery import Gallery, GalleryError
from daemon.recognition import DEFAULT_TARGET_FAR, calibrate

logger = logging.getLogger(__name__)

EXPORT_FORMATS = (".json", ".npz")


def default_gallery_path() -> Path:
    env = os.environ.get("FACEWATCH_GALLERY")
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "facewatch" / "gallery.sqlite"


def gallery_path(args: argparse.Namespace) -> Path:
    return args.gallery or default_gallery_path()


def add_gallery_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gallery",
        type=Path,
        default=None,
        help="gallery file (default: $FACEWATCH_GALLERY, else "
        "$XDG_DATA_HOME/facewatch/gallery.sqlite, i.e. ~/.local/share/facewatch/gallery.sqlite)",
    )


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("gallery", help="list, remove, rename, export enrolled people")
    sub = p.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    actions = {
        "list": ("who is enrolled", _list),
        "remove": ("forget a person and all their faces", _remove),
        "rename": ("rename a person", _rename),
        "threshold": ("set one person's threshold (or 'default')", _threshold),
        "export": ("write every embedding to FILE (.json or .npz, by its suffix)", _export),
        "calibrate": ("choose the match threshold from the enrolled people", _calibrate),
    }
    descriptions = {
        "calibrate": "Choose the gallery's default match threshold from the enrolled people "
        "themselves: each enrolled face in turn is matched against all the others (leave one "
        "out), its distance to the nearest face of another person is an impostor trial, to "
        "the nearest other face of its own person a genuine one. The largest threshold whose "
        "false-accept rate stays at or under --target-far is stored, with the false-reject "
        "rate it costs. People need two faces or more to count as genuine trials; identities "
        "with their own threshold keep it.",
    }
    parsers = {}
    for name, (help_text, func) in actions.items():
        parsers[name] = sub.add_parser(
            name, help=help_text, description=descriptions.get(name, help_text)
        )
        add_gallery_option(parsers[name])
        parsers[name].set_defaults(func=_guarded(func))
    parsers["list"].add_argument("--json", action="store_true", help="JSON on stdout")
    parsers["remove"].add_argument("name")
    parsers["rename"].add_argument("old")
    parsers["rename"].add_argument("new")
    parsers["threshold"].add_argument("name")
    parsers["threshold"].add_argument("value", help="squared L2 in (0, 4], or 'default'")
    parsers["export"].add_argument("file", type=Path, help="output: FILE.json or FILE.npz")
    calib = parsers["calibrate"]
    calib.add_argument(
        "--target-far",
        type=float,
        default=DEFAULT_TARGET_FAR,
        help=f"false-accept rate to stay under (default {DEFAULT_TARGET_FAR})",
    )
    calib.add_argument("--dry-run", action="store_true", help="report, do not store")


def _guarded(func: Any) -> Any:
    """Run an action; a GalleryError is one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except GalleryError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _list(args: argparse.Namespace) -> int:
    with Gallery.open(gallery_path(args)) as gallery:
        people = gallery.identities()
        if args.json:
            record = {
                "gallery": str(gallery.path),
                "model_id": gallery.model_id,
                "embedding_size": gallery.embedding_size,
                "threshold": gallery.threshold,
                "identities": [p.__dict__ for p in people],
            }
            print(json.dumps(record, indent=2))
            return 0
        print(
            f"{gallery.path}: {len(people)} person(s), model {gallery.model_id}, "
            f"default threshold {gallery.threshold:.3f}"
        )
        width = max([len(p.name) for p in people] + [4])
        for person in people:
            limit = "default" if person.threshold is None else f"{person.threshold:.3f}"
            print(
                f"  {person.name:<{width}}  {person.embeddings:3d} face(s)  "
                f"threshold {limit:<8} updated {person.updated}"
            )
    return 0


def _remove(args: argparse.Namespace) -> int:
    with Gallery.open(gallery_path(args), writable=True) as gallery:
        count = gallery.remove(args.name)
    print(f"removed {args.name} ({count} face(s))")
    return 0


def _rename(args: argparse.Namespace) -> int:
    with Gallery.open(gallery_path(args), writable=True) as gallery:
        gallery.rename(args.old, args.new)
    print(f"renamed {args.old} to {args.new}")
    return 0


def _threshold(args: argparse.Namespace) -> int:
    value = None if args.value == "default" else _float(args.value)
    with Gallery.open(gallery_path(args), writable=True) as gallery:
        gallery.set_threshold(args.name, value)
    print(f"{args.name}: threshold {'default' if value is None else value}")
    return 0


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise GalleryError(f"threshold {text!r} is neither a number nor 'default'") from None


def _export(args: argparse.Namespace) -> int:
    suffix = args.file.suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise GalleryError(
            f"{args.file}: say the format by the suffix: .json (readable) or .npz (numpy arrays)"
        )
    with Gallery.open(gallery_path(args)) as gallery:
        vectors, owners, sources, created = gallery.embeddings()
        people = gallery.identities()
        header = {
            "model_id": gallery.model_id,
            "embedding_size": gallery.embedding_size,
            "threshold": gallery.threshold,
            "distance": "squared euclidean on L2-normalised embeddings",
        }
    fd = os.open(args.file, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)  # biometric data
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
                    [np.nan if p.threshold is None else p.threshold for p in people], np.float32
                ),
                header=np.array(json.dumps(header)),
            )
        else:
            handle.write(
                json.dumps(_export_json(header, people, vectors, owners, sources, created)).encode()
            )
    print(
        f"exported {len(people)} person(s), {len(vectors)} embedding(s) to {args.file} ({suffix[1:]})"
    )
    return 0


def _export_json(
    header: dict[str, Any],
    people: list[Any],
    vectors: np.ndarray,
    owners: list[str],
    sources: list[str],
    created: list[str],
) -> dict[str, Any]:
    by_name: dict[str, list[dict[str, Any]]] = {p.name: [] for p in people}
    for vector, owner, source, when in zip(vectors, owners, sources, created, strict=True):
        by_name[owner].append(
            {"vector": [float(v) for v in vector], "source_sha256": source, "created": when}
        )
    identities = [
        {
            "name": p.name,
            "threshold": p.threshold,
            "created": p.created,
            "updated": p.updated,
            "embeddings": by_name[p.name],
        }
        for p in people
    ]
    return {"format": "facewatch-gallery", "version": 1, **header, "identities": identities}


def _calibrate(args: argparse.Namespace) -> int:
    with Gallery.open(gallery_path(args), writable=not args.dry_run) as gallery:
        vectors, owners, _, _ = gallery.embeddings()
        try:
            result = calibrate(vectors, owners, args.target_far)
        except ValueError as exc:
            raise GalleryError(f"{gallery.path}: {exc}") from None
        if not args.dry_run:
            gallery.set_threshold(None, result.threshold)
    print(
        f"calibrated on {result.people} people, {result.impostor} faces "
        f"({result.genuine} with another face of the same person), leave-one-out"
    )
    print(f"threshold {result.threshold:.4f} (squared L2) for target FAR {result.target_far:g}")
    print(f"expected FAR {result.far:.2%}, FRR {result.frr:.2%}")
    if result.target_far and result.target_far < result.far_resolution:
        print(
            f"note: {result.impostor} faces cannot measure a FAR below "
            f"{result.far_resolution:.2%}; enroll more people for a finer estimate"
        )
    print("not stored (--dry-run)" if args.dry_run else f"stored as the default in {gallery.path}")
    return 0
