"""``facewatch archive list``: the visits in the face archive, to find the ones to look at or
to enroll from (docs/operations.md, section 3); and the visits that show a person
(``visits_of``: ``gallery remove --forget``, daemon/forget.py)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.archive_files import (
    VISIT_FILE,
    archive_level,
    is_visit_folder,
    read_visit,
)
from daemon.config import ConfigError, running_config
from daemon.config_file import load_config
from daemon.face_quality import MIN_FACE_SCORE
from daemon.gallery_names import twin_key
from daemon.journal import print_error
from engines.base import file_sha256, finite_number


def read_visits(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, visit.json) of every visit under ``root``, oldest first; a visit.json that
    cannot be read is reported on stderr and skipped."""
    visits = []
    for path in root.glob(f"*/*/*/{VISIT_FILE}"):
        try:
            about = read_visit(path)
        except (OSError, ValueError) as exc:
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        visits.append((path.parent, about))
    return sorted(visits, key=lambda visit: visit[1]["first_seen_ts"])


def _names(about: dict[str, Any]) -> list[str]:
    """Every name the visit's events gave (``named``; a visit.json without it: its identity)."""
    named = about.get("named")
    if named is None:
        named = [about["identity"]] if about.get("identity") else []
    return [str(name) for name in named]


def visits_of(root: Path, name: str, photos: set[str]) -> list[Path]:
    """The visits under ``root`` that show ``name``: an event of theirs named them (in any
    case, as ``list --name`` finds them), or one of their images is a photo ``name`` was
    enrolled from (its SHA-256 in ``photos``: enrolled from the visit's folder, the visit
    itself may name nobody). Only folders the writer made, inside ``root`` itself: not a
    folder of the user's own, nor one behind a symbolic link (it may lead anywhere)."""
    key = twin_key(name)
    inside = root.resolve()
    return [
        folder
        for folder, about in read_visits(root)
        if is_visit_folder(folder)
        and inside in folder.resolve().parents
        and (key in map(twin_key, _names(about)) or _holds(folder, photos))
    ]


def _holds(folder: Path, photos: set[str]) -> bool:
    """Whether an image of the visit ``folder`` is one of ``photos`` (SHA-256s)."""
    return bool(photos) and any(
        file_sha256(image) in photos for image in folder.glob("*.jpg") if image.is_file()
    )


def _wanted(about: dict[str, Any], args: argparse.Namespace) -> bool:
    if args.camera is not None and about.get("camera") != args.camera:
        return False
    if args.track is not None and about.get("track_id") != args.track:
        return False
    if args.since is not None and about["first_seen_ts"] < args.since:
        return False
    if args.unknown and _names(about):
        return False
    # the gallery refuses names that differ in case or unseen characters only (twin_key):
    # `--name ada` can only mean Ada
    return args.name is None or twin_key(args.name) in map(twin_key, _names(about))


def _line(folder: Path, about: dict[str, Any]) -> str:
    start = _local_time(about["first_seen_ts"])
    lasted = float(about.get("last_seen_ts", about["first_seen_ts"])) - about["first_seen_ts"]
    listed = about.get("images", [])
    images = [image for image in listed if _on_disk(folder, image)]
    rated = all("enrollable" in image for image in images)
    enrollable = sum(map(_enrollable, images)) if rated else "?"
    missing = f" ({len(listed) - len(images)} missing)" if len(images) < len(listed) else ""
    who = about.get("identity") or "unknown"
    before = [name for name in _names(about) if name != about.get("identity")]
    if before:
        who += f" (before: {', '.join(before)})"
    return (
        f"{start}  {about.get('camera', '?')}  {who}  {len(images)} image(s){missing}, "
        f"{enrollable} enrollable  {lasted:.1f} s  {folder}"
    )


def _enrollable(image: dict[str, Any]) -> bool:
    """Whether enroll's default gates likely take the image: as the archive rated it, and
    (visits an older facewatch rated) a face the detector scored as one that looks at it."""
    score = finite_number(image.get("score"))
    return bool(image.get("enrollable")) and (score is None or score >= MIN_FACE_SCORE)


def _on_disk(folder: Path, image: dict[str, Any]) -> bool:
    """Whether the image visit.json lists is in the visit's folder (one deleted by hand is
    not: enroll takes the files that are there)."""
    name = image.get("file")
    return isinstance(name, str) and (folder / name).is_file()


def _local_time(ts: float) -> str:
    """``ts`` in local time, with its UTC offset where it differs from the present one: the
    hour a clock goes back happens twice, and its two 01:30 are told apart."""
    moment = datetime.fromtimestamp(ts).astimezone()
    shown = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.utcoffset() != datetime.now().astimezone().utcoffset():
        shown += moment.strftime("%z")
    return shown


def run_list(args: argparse.Namespace) -> int:
    """The archive's folder (--dir, else the config's archive.dir) checked, the visits the
    options ask for listed, then how many, and how to enroll from them or why none matched."""
    if args.track is not None and args.camera is None:
        print_error("--track needs --camera: each camera numbers its own tracks")
        return 2
    try:
        root, which = _archive_folder(args)
    except ConfigError as exc:
        print_error(str(exc))
        return 2
    refused = _check_folder(root, given=args.dir is not None)
    if refused is not None:
        return refused
    visits = read_visits(root)
    shown = _print_visits(visits, args)
    if not args.json:
        print(f"{shown} of the {len(visits)} visit(s) in {root}", file=sys.stderr)
        if shown:
            _say_how_to_enroll(args.config)
    if not shown:
        _say_why_none(args, [about for _, about in visits], which)
    return 0


def _archive_folder(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The folder to list, and the archive.which its visits were kept by (None with --dir:
    not known): --dir, else the --config's archive.dir (the running daemon's config by
    default, then set as ``args.config``). ConfigError for a config that cannot be read or
    has no archive.dir."""
    if args.dir is not None:
        return args.dir, None
    args.config = args.config or running_config()
    archive = load_config(args.config, secrets=False).archive
    if archive.dir is None:
        raise ConfigError(f"{args.config}: archive.dir is not set (the archive is off)")
    return Path(archive.dir), archive.which


def _check_folder(root: Path, given: bool) -> int | None:
    """None when ``root`` is an archive's folder this user can read; else what is wrong,
    said, and the exit status: 2 for a file, a --dir (``given``) that does not exist or a
    folder inside an archive, 1 for a folder this user cannot read, 0 for a config's
    archive.dir the daemon has not made yet (no visits)."""
    try:
        if root.exists() and not root.is_dir():
            print_error(f"{root}: a file, not the archive's folder")
            return 2
        if not root.is_dir() and given:  # a typo, more likely than no visit
            print_error(f"--dir {root}: no such folder (the archive's folder, archive.dir)")
            return 2
        if not root.is_dir():
            print(f"{root}: no visits yet (the folder does not exist)", file=sys.stderr)
            return 0
        readable = os.access(root, os.R_OK | os.X_OK)
    except PermissionError:
        readable = False
    if not readable:
        print_error(
            f"{root}: cannot be read by this user; run as the daemon's user (the `fw` "
            "helper of docs/operations.md, section 2)"
        )
        return 1
    level = archive_level(root)
    if level not in (None, "the archive"):
        print_error(
            f"{root}: {level} folder of the face archive: give the archive's own folder "
            "(archive.dir)"
        )
        return 2
    return None


def _print_visits(visits: list[tuple[Path, dict[str, Any]]], args: argparse.Namespace) -> int:
    """The visits the options ask for, on stdout: one line each (--json: one object, its
    visit.json and folder); how many."""
    shown = 0
    for folder, about in visits:
        if not _wanted(about, args):
            continue
        shown += 1
        if args.json:
            print(json.dumps({**about, "folder": str(folder)}, ensure_ascii=False))
        else:
            print(_line(folder, about))
    return shown


def _say_how_to_enroll(config: Path | None) -> None:
    """The enroll command that takes the folders listed, with the config given (else
    CONFIG), on stderr: stdout stays the visits' lines."""
    shown = shlex.quote(str(config)) if config is not None else "CONFIG"
    print(
        f"to enroll someone from their visits: facewatch enroll --config {shown} "
        "--name NAME FOLDER... (the folders above; --skip-bad leaves out images it refuses)",
        file=sys.stderr,
    )


def _say_why_none(
    args: argparse.Namespace, visits: list[dict[str, Any]], which: str | None
) -> None:
    """When nothing matched: the cameras or names there are (they match exactly), and that
    ``which: unknown`` keeps no visit that named someone."""
    if args.camera is not None:
        cameras = sorted({str(about.get("camera")) for about in visits})
        print(f"cameras in the archive: {', '.join(cameras) or 'none'}", file=sys.stderr)
    if args.track is not None:
        note = "a track's visit is written once it has left (its left event)"
        if which != "all":
            note += ", and with archive.which: unknown only if none of its events named anyone"
        print(note, file=sys.stderr)
    if args.name is not None:
        if which == "unknown":
            print(
                "archive.which is unknown: visits in which someone was named are not kept",
                file=sys.stderr,
            )
        names = sorted({name for about in visits for name in _names(about)})
        print(f"names in the archive: {', '.join(names) or 'none'}", file=sys.stderr)
