"""`facewatch gallery list | remove | rename | threshold | export | calibrate`.

The gallery file: ``--gallery PATH``, else the ``recognition.gallery`` of the daemon config
given with ``--config``, else $FACEWATCH_GALLERY, else
``$XDG_DATA_HOME/facewatch/gallery.sqlite`` (``~/.local/share/facewatch/gallery.sqlite``).
None of these commands needs the FaceNet model: they work on the stored embeddings.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from daemon import gallery_export
from daemon.calibration import DEFAULT_TARGET_FAR, MAX_STORED_FRR
from daemon.cli_args import number
from daemon.config import ConfigError
from daemon.gallery import Gallery, remove_created, shown_threshold
from daemon.gallery_calibrate import _calibrate, _say_overridden
from daemon.gallery_check import check_threshold
from daemon.gallery_choice import add_gallery_option, gallery_path
from daemon.gallery_file import GalleryError
from daemon.gallery_names import twin_key
from daemon.gallery_read import Identity
from daemon.gallery_remove import _remove
from daemon.journal import print_error

logger = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "gallery",
        help="list, remove, rename, set thresholds, export, import, calibrate enrolled people",
    )
    sub = p.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    _register_list(sub)
    _register_remove(sub)
    _register_rename(sub)
    _register_threshold(sub)
    _register_export(sub)
    _register_import(sub)
    _register_calibrate(sub)


def _action(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Any,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """One action's parser, with --gallery and --config (``add_gallery_option``) and its
    function guarded (``_guarded``); its description: ``help_text`` unless given."""
    parser = sub.add_parser(
        name, help=help_text, description=help_text if description is None else description
    )
    add_gallery_option(parser)
    parser.set_defaults(func=_guarded(func))
    return parser


def _register_list(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listing = _action(
        sub,
        "list",
        "who is enrolled",
        _list,
        "Who is enrolled: each person's faces, threshold and last change. With NAME, "
        "each of that person's faces: when it was enrolled and the SHA-256 of the photo it "
        "came from (the photos of one enroll share its time), for `gallery remove NAME "
        "--photos`. Every face is read, as the daemon reads them: a damaged gallery (a face "
        "that is not a unit vector of the gallery's size, a threshold that is not a number) "
        "is an error naming the person, the face and what to do (exit status 1).",
    )
    listing.add_argument(
        "name", nargs="?", help="one person: each of their faces, when enrolled, from what"
    )
    listing.add_argument(
        "--json",
        action="store_true",
        help="JSON on stdout (each person's faces too: created, source_sha256)",
    )


def _register_remove(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    remove = _action(
        sub,
        "remove",
        "remove a person and their enrolled faces from the gallery, or with --photos "
        "only the faces enrolled from some photos",
        _remove,
        "Remove a person and their enrolled faces from the gallery (their embeddings); "
        "the daemon stops naming them at its next reload and deletes their MQTT topics. "
        "Their face archive visits, events and history elsewhere stay: --forget deletes the "
        "visits and lists the rest (docs/operations.md, 'Forgetting a person'). With "
        "--photos, only the faces enrolled from those photos go (a visit of someone else "
        "enrolled by mistake), and the person stays.",
    )
    remove.add_argument("name", help="the person to remove, as `gallery list` shows")
    remove.add_argument(
        "--forget",
        action="store_true",
        help="also delete the face archive's visits that show them (an event named them, in "
        "any case, or an image is one they were enrolled from), then list what facewatch "
        "cannot delete; needs --config or --archive. Someone removed earlier (or this run "
        "again): their named visits are deleted, exit status 0",
    )
    remove.add_argument(
        "--photos",
        nargs="+",
        metavar="PHOTO",
        help="remove only the faces enrolled from these: photos, folders (a face archive "
        "visit's: all its images) or SHA-256s as `gallery list NAME` shows them; each must "
        "be one a face of NAME came from, else nothing is removed. Their last face: the "
        "person is removed, as without --photos",
    )
    remove.add_argument(
        "--archive",
        type=Path,
        action="append",
        metavar="DIR",
        help="with --forget: the face archive folder (default: the --config's archive.dir); "
        "again for each archive of daemons that share this gallery, all in one run (their "
        "enrolled photos, which find the visits they were enrolled from, go with them)",
    )


def _register_rename(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rename = _action(sub, "rename", "rename a person", _rename)
    rename.add_argument("old", help="the person's name now")
    rename.add_argument("new", help="the new name")


def _register_threshold(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    threshold = _action(
        sub,
        "threshold",
        "set one person's match threshold, or the gallery default",
        _threshold,
        "NAME VALUE sets NAME's own threshold (squared L2 in (0, 4]: a face "
        "matches NAME when closer than this); NAME default makes NAME use the gallery default "
        "again; --default VALUE sets the gallery default (what `gallery calibrate` chooses).",
    )
    threshold.usage = (
        "facewatch gallery threshold NAME VALUE|default [--gallery FILE | --config FILE]\n"
        "       facewatch gallery threshold --default VALUE [--gallery FILE | --config FILE]"
    )
    threshold.add_argument("words", nargs="*", metavar="NAME VALUE", help="one person and value")
    threshold.add_argument(
        "--default",
        action="store_true",
        help="set the gallery default (the daemon uses its config's recognition.threshold "
        "instead, when that is set)",
    )


def _register_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = _action(
        sub,
        "export",
        "write every embedding to FILE (.json or .npz, by its suffix)",
        _export,
        "Write every enrolled embedding, with names, thresholds and the model id, to "
        "FILE (owner-only: these are biometric data). An existing FILE is kept unless --force.",
    )
    export.add_argument("file", type=Path, help="output: FILE.json or FILE.npz")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")


def _register_import(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imports = _action(
        sub,
        "import",
        "add the people of an export to the gallery (a backup, another box)",
        _import,
        "Add every person and embedding of FILE (a `gallery export`, .json or .npz) "
        "to the gallery, with their own thresholds; a new gallery takes the export's model and "
        "default threshold. The gallery's model must be the export's. Faces already there are "
        "not added twice; a photo enrolled as another person refuses the whole import.",
    )
    imports.add_argument("file", type=Path, help="a gallery export: FILE.json or FILE.npz")


def _register_calibrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    calib = _action(
        sub,
        "calibrate",
        "choose the match threshold from the enrolled people",
        _calibrate,
        "Choose the gallery's default match threshold from the enrolled people "
        "themselves: each enrolled face in turn is matched against all the others (leave one "
        "out), the pair it makes with the nearest face of another person is an impostor trial "
        "(two faces that are each other's nearest make one trial), its distance to the nearest "
        "other face of its own person a genuine one. The largest threshold whose false-accept "
        "rate stays at or under --target-far is stored, with the false-reject rate it costs. "
        "People need two faces or more to count as genuine trials; identities with their own "
        "threshold keep it.",
    )
    calib.add_argument(
        "--target-far",
        type=number(float, ge=0, lt=1),
        default=DEFAULT_TARGET_FAR,
        help=f"false-accept rate to stay under, in [0, 1) (default {DEFAULT_TARGET_FAR})",
    )
    calib.add_argument("--dry-run", action="store_true", help="report, do not store")
    calib.add_argument(
        "--force",
        action="store_true",
        help="store the threshold even when there are too few impostor trials to measure "
        "--target-far (fewer than 1 / target: by default nothing is stored then, since the "
        "threshold would be the distance between the two closest people, which strangers "
        f"pass), or when it would turn away more than {MAX_STORED_FRR:.0%}% of the enrolled "
        "people's own faces",
    )


def _guarded(func: Any) -> Any:
    """Run an action; a GalleryError is one line on stderr and exit status 1, an unusable
    --config exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except GalleryError as exc:
            print_error(str(exc))
            return 1
        except ConfigError as exc:
            print_error(str(exc))
            return 2

    return run


def _list(args: argparse.Namespace) -> int:
    with Gallery.open(gallery_path(args)) as gallery:
        people = gallery.identities()
        gallery.load()  # every face read, as the daemon reads them: a damaged one is said
        if args.name is not None:
            return _list_faces(gallery, args.name, args.json)
        if args.json:
            record = {
                "gallery": str(gallery.path),
                "model_id": gallery.model_id,
                "embedding_size": gallery.embedding_size,
                "threshold": gallery.threshold,
                "identities": [_with_faces(gallery, p) for p in people],
            }
            print(json.dumps(record, indent=2))
            return 0
        print(
            f"{gallery.path}: {len(people)} person(s), model {gallery.model_id}, "
            f"default threshold {shown_threshold(gallery.threshold)}"
        )
        width = max([len(p.name) for p in people] + [4])
        for person in people:
            limit = "default" if person.threshold is None else shown_threshold(person.threshold)
            print(
                f"  {person.name:<{width}}  {person.embeddings:3d} face(s)  "
                f"threshold {limit:<8} updated {person.updated}"
            )
    _warn_twins([p.name for p in people])
    return 0


def _with_faces(gallery: Gallery, person: Identity) -> dict[str, Any]:
    """A person as `gallery list --json` shows them: with each face's time and source."""
    faces = gallery.faces_of(person.name)
    return {
        **person.__dict__,
        "faces": [{"created": created, "source_sha256": sha} for created, sha in faces],
    }


def _list_faces(gallery: Gallery, name: str, as_json: bool) -> int:
    """``gallery list NAME``: each of NAME's faces, oldest first, by when it was enrolled and
    the SHA-256 of its photo (as `sha256sum` gives it)."""
    person = gallery.identity(name)  # GalleryError: "no identity named ...; did you mean"
    faces = gallery.faces_of(name)
    if as_json:
        print(json.dumps(_with_faces(gallery, person), indent=2))
        return 0
    limit = "default" if person.threshold is None else shown_threshold(person.threshold)
    print(f"{person.name}: {len(faces)} face(s), threshold {limit}, in {gallery.path}")
    for created, sha in faces:
        print(f"  enrolled {created}  photo sha256 {sha}")
    print(
        f"remove the faces of some photos: facewatch gallery remove {shlex.quote(person.name)} "
        "--photos PHOTO_OR_VISIT_FOLDER...",
        file=sys.stderr,
    )
    return 0


def _warn_twins(names: list[str]) -> None:
    """Names that look alike (``twin_key``: enrolled before facewatch refused them) are two
    people to the gallery: say so, each name escaped to show how they differ, and how to make
    them one."""
    by_key: dict[str, list[str]] = {}
    for name in names:
        by_key.setdefault(twin_key(name), []).append(name)
    for twins in (t for t in by_key.values() if len(t) > 1):
        print(
            f"note: {' and '.join(map(repr, twins))} look alike (they differ in case, spaces, "
            f"full-width or invisible characters only) but are {len(twins)} people here: "
            "`gallery remove` all but one and enroll their photos again under that one's name",
            file=sys.stderr,
        )


def _rename(args: argparse.Namespace) -> int:
    with Gallery.open(gallery_path(args), writable=True) as gallery:
        gallery.rename(args.old, args.new)
    print(f"renamed {args.old} to {args.new}")
    return 0


def _threshold(args: argparse.Namespace) -> int:
    """Exit status 2 for what is wrong in the arguments themselves (count, number, range)."""
    if args.default != (len(args.words) == 1) or not 1 <= len(args.words) <= 2:
        want = "--default VALUE" if args.default else "NAME VALUE|default, or --default VALUE"
        print_error(f"gallery threshold {want} (one person at a time)")
        return 2
    name, text = (None, args.words[0]) if args.default else args.words
    try:
        value = None if name is not None and text == "default" else check_threshold(_float(text))
    except GalleryError as exc:
        print_error(str(exc))
        return 2
    with Gallery.open(gallery_path(args), writable=True) as gallery:
        gallery.set_threshold(name, value)
    if name is None:
        print(f"default threshold {value} in {gallery.path}")
        _say_overridden(args, gallery.path)
    else:
        print(f"{name}: threshold {'default' if value is None else value}")
    return 0


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise GalleryError(f"threshold {text!r} is not a number") from None


def _export(args: argparse.Namespace) -> int:
    people, vectors = gallery_export.write(gallery_path(args), args.file, args.force)
    kind = args.file.suffix.lower()[1:]
    print(f"exported {people} person(s), {vectors} embedding(s) to {args.file} ({kind})")
    return 0


def _import(args: argparse.Namespace) -> int:
    export = gallery_export.read(args.file)
    path = gallery_path(args)
    gallery: Gallery | None = None
    try:
        with Gallery.open_or_create(
            path, export.model_id, export.embedding_size, export.threshold
        ) as gallery:
            new = gallery.created is not None  # not when another command made it meanwhile
            added = gallery.enroll(export.faces, export.thresholds)  # thresholds too, at once
    except GalleryError:
        if gallery is not None:
            remove_created(gallery)  # nothing was imported: leave no empty gallery behind
        raise
    names = {face.name for face in export.faces}
    print(
        f"imported {added} new embedding(s) of {len(names)} person(s) from {args.file} into "
        f"{path}"
        + (f" (a new gallery, threshold {shown_threshold(export.threshold)})" if new else "")
    )
    return 0
