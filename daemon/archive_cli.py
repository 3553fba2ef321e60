"""``facewatch archive list``: the visits in the face archive, to find the ones to look at or
to enroll from (docs/operations.md, section 3)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.archive import FaceArchive
from daemon.archive_files import (
    LOCK_FILE,
    PRUNE,
    PRUNE_WAIT_S,
    VISIT_FILE,
    archive_level,
    is_visit_folder,
    read_visit,
    scan_visits,
)
from daemon.claims import Busy, claim
from daemon.cli_args import number
from daemon.config import CHOSEN_CONFIG, ConfigError, running_config
from daemon.config_file import load_config
from daemon.config_outputs import ArchiveConfig
from daemon.gallery_names import twin_key
from daemon.journal import print_error
from daemon.recognition import MIN_FACE_SCORE
from engines.base import file_sha256, finite_number


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("archive", help="the visits kept in the face archive (archive.dir)")
    sub = p.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    listing = sub.add_parser(
        "list",
        help="one line per visit",
        description="One line per visit in the face archive, oldest first: its start (local "
        "time), camera, who (the name it left as, or unknown; with the names its events gave "
        "before, if any), how many images and how many of them enroll would likely take ('?' "
        "for visits an older facewatch wrote), how long it lasted, and its folder, which "
        "`facewatch enroll --config CONFIG --name NAME FOLDER` takes (the last line on "
        "stderr says so).",
    )
    where = listing.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"the daemon's config, for its archive.dir (default: {CHOSEN_CONFIG})",
    )
    where.add_argument(
        "--dir",
        type=Path,
        help="the archive folder itself (one that does not exist is an error, exit status 2; "
        "--config's archive.dir not yet made by the daemon: no visits yet, 0)",
    )
    listing.add_argument("--camera", help="only this camera's visits")
    listing.add_argument(
        "--track",
        type=number(int, ge=0),
        metavar="N",
        help="with --camera: the visit of an event's track_id, e.g. an unknown one's (track "
        "ids restart with the daemon: --since its day leaves out earlier runs' track N)",
    )
    listing.add_argument(
        "--since",
        type=_moment,
        metavar="WHEN",
        help="visits that started then or later: a day (2026-11-29) or a day and time "
        "('2026-11-29 18:30'), local time",
    )
    who = listing.add_mutually_exclusive_group()
    who.add_argument(
        "--unknown", action="store_true", help="only visits none of whose events named anyone"
    )
    who.add_argument(
        "--name",
        help="only visits an event of which named this person, in any case (kept with "
        "archive.which: all only)",
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON object per visit: its visit.json and folder"
    )
    listing.set_defaults(func=run_list)
    remove = sub.add_parser(
        "remove",
        help="delete visits",
        description="Delete visit folders of the face archive (as `archive list` shows them), "
        "e.g. a passer-by's; run it as the daemon's user. Anything that is not a visit folder "
        "is refused, and then nothing is deleted.",
    )
    remove.add_argument("visits", nargs="+", type=Path, metavar="VISIT_FOLDER")
    remove.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the daemon's config: only visits of its archive.dir are deleted (as `archive "
        "list --config` lists them)",
    )
    remove.set_defaults(func=run_remove)
    _register_prune(sub)


def _register_prune(sub: argparse._SubParsersAction) -> None:
    prune = sub.add_parser(
        "prune",
        help="delete the visits past keep_days or beyond max_mb now",
        description="Delete the visits that started more than keep_days ago, then the oldest "
        "while the archive takes more than max_mb, once, as the running daemon does every "
        "minute: for an archive no daemon writes (the daemon stopped, or archive.dir set "
        "back to null, which leaves its visits), from a timer. Run it as the daemon's user. "
        "While a daemon writes the folder it prunes it itself: this says so, deletes "
        "nothing, and exits 0. Only visit folders are deleted, as the daemon deletes them.",
    )
    where = prune.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the daemon's config: its archive.dir, keep_days and max_mb (default: "
        f"{CHOSEN_CONFIG})",
    )
    where.add_argument(
        "--dir",
        type=Path,
        help="the archive folder itself (one left by archive.dir: null, say), with keep_days "
        f"{ArchiveConfig().keep_days:g} and max_mb {ArchiveConfig().max_mb:g} unless given",
    )
    prune.add_argument(
        "--keep-days",
        type=number(float, gt=0, le=3650),
        metavar="DAYS",
        help="in place of the config's archive.keep_days",
    )
    prune.add_argument(
        "--max-mb",
        type=number(float, gt=0),
        metavar="MB",
        help="in place of the config's archive.max_mb",
    )
    prune.set_defaults(func=run_prune)


def _moment(text: str) -> float:
    """A day (its midnight) or a day and time, in local time unless it has a UTC offset; as
    a timestamp."""
    try:  # (Python 3.10's fromisoformat knows no "Z")
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a day or a day and time, e.g. 2026-11-29 or '2026-11-29 18:30', got {text!r}"
        ) from None
    return moment.timestamp()


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


def run_remove(args: argparse.Namespace) -> int:
    missing = [str(folder) for folder in args.visits if not folder.exists()]
    if missing:
        bare = any(len(Path(name).parts) == 1 for name in missing)
        hint = " (give the whole folder, as `archive list` prints it)" if bare else ""
        print_error(
            f"no such folder: {', '.join(missing)} (deleted already?){hint}; nothing was deleted"
        )
        return 1
    visits = list(dict.fromkeys(folder.resolve() for folder in args.visits))
    refused = [str(folder) for folder in visits if not is_visit_folder(folder)]
    if refused:
        print_error(
            f"not a visit folder of the face archive: {', '.join(refused)}; nothing was deleted"
        )
        return 1
    status, outside = _outside_the_archive(args.config, visits)
    if outside:
        print_error(f"{outside}; nothing was deleted")
        return status
    for folder in visits:
        shutil.rmtree(folder)
        print(f"deleted {folder}")
    return 0


def _outside_the_archive(config: Path | None, visits: list[Path]) -> tuple[int, str]:
    """Why some of ``visits`` may not be deleted with ``--config`` (exit status 2: the config
    names no archive; 1: its archive.dir has not all of them); "" when it has all, or
    without a config."""
    if config is None:
        return 0, ""
    try:
        root = load_config(config, secrets=False).archive.dir
    except ConfigError as exc:
        return 2, str(exc)
    if root is None:
        return 2, f"{config}: archive.dir is not set (the archive is off)"
    archive = Path(root).resolve()
    foreign = [str(folder) for folder in visits if archive not in folder.parents]
    if foreign:
        return 1, f"not in the face archive {archive} of {config}: {', '.join(foreign)}"
    return 0, ""


def run_prune(args: argparse.Namespace) -> int:
    try:
        settings = _prune_settings(args)
    except ConfigError as exc:
        print_error(str(exc))
        return 2
    root = Path(str(settings.dir))
    if not root.exists() and args.dir is None:  # archive.dir not made yet
        print(f"{root}: no visits (the folder does not exist)")
        return 0
    if not root.is_dir():
        print_error(f"{root}: no such folder (the archive's folder, archive.dir)")
        return 2
    if archive_level(root) not in (None, "the archive"):
        print_error(
            f"{root}: {archive_level(root)} folder of the face archive: give the archive's "
            "own folder (archive.dir)"
        )
        return 2
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        print_error(
            f"{root}: cannot be read and written by this user; run as the daemon's user "
            "(the `fw` helper of docs/operations.md, section 2)"
        )
        return 1
    try:
        lock = claim(root / LOCK_FILE, "archive.dir", PRUNE, PRUNE_WAIT_S, _say_waiting)
    except Busy as exc:
        print(_held_by(root, exc))
        return 0
    except OSError as exc:
        print_error(f"{root / LOCK_FILE}: cannot be opened ({exc.strerror or exc})")
        return 1
    try:
        _keep_for_the_daemon(lock, root)
        return _prune(root, settings)
    finally:
        os.close(lock)


def _prune_settings(args: argparse.Namespace) -> ArchiveConfig:
    """The archive to prune and its limits: --dir with the defaults, else the --config's
    archive section (the running daemon's config by default); --keep-days and --max-mb
    replace either's. ConfigError for a config without archive.dir."""
    if args.dir is not None:
        settings = ArchiveConfig(dir=str(args.dir))
    else:
        args.config = args.config or running_config()
        settings = load_config(args.config, secrets=False).archive
        if settings.dir is None:
            raise ConfigError(
                f"{args.config}: archive.dir is not set (the archive is off); the visits an "
                "archive left stay until deleted: give its folder as --dir DIR"
            )
    changes = {"keep_days": args.keep_days, "max_mb": args.max_mb}
    return settings.model_copy(update={k: v for k, v in changes.items() if v is not None})


def _prune(root: Path, settings: ArchiveConfig) -> int:
    """Delete what keep_days and max_mb leave out, each visit said; exit status 1 when one
    could not be deleted (another user's), named."""
    deleted = FaceArchive(settings, "", None).prune_once()
    why = {
        "age": f"started over keep_days {settings.keep_days:g} ago",
        "size": f"oldest beyond max_mb {settings.max_mb:g}",
    }
    failed = []
    for reason, folders in deleted.items():
        for folder in folders:
            if folder.exists():
                failed.append(str(folder))
            else:
                print(f"deleted {folder} ({why[reason]})")
    left = scan_visits(root)
    print(
        f"deleted {len(deleted['age'])} visit(s) older than keep_days {settings.keep_days:g} "
        f"and {len(deleted['size'])} to stay within max_mb {settings.max_mb:g}; "
        f"{len(left)} visit(s), {sum(size for _, _, size in left) / 1e6:.1f} MB left in {root}"
    )
    if failed:
        print_error(
            f"could not be deleted: {', '.join(failed)}; run as the daemon's user (the `fw` "
            "helper of docs/operations.md, section 2)"
        )
        return 1
    return 0


def _say_waiting(text: str) -> None:
    """Another prune's wait, on stderr: the command's log shows warnings only."""
    print(f"note: {text}", file=sys.stderr)


def _held_by(root: Path, busy: Busy) -> str:
    """Why nothing was pruned: who holds the archive's lock, as it said when it was found
    held (one read: a daemon starting writes its pid a moment after it locks)."""
    if busy.brief:
        return (
            f"{root}: another `facewatch {busy.brief}` (pid {busy.pid}) has been at it for "
            f"{PRUNE_WAIT_S:g} s; nothing was deleted by this one: run it again once that one "
            "is done"
        )
    daemon = f"the running daemon (pid {busy.pid})" if busy.pid else "a facewatch daemon"
    return (
        f"{root}: {daemon} prunes it itself, by its config's keep_days and max_mb; nothing "
        f"was deleted (it holds {LOCK_FILE} while it runs; to prune by other limits, stop it "
        "and run this again)"
    )


def _keep_for_the_daemon(lock: int, root: Path) -> None:
    """Run as root, the lock file goes to the archive folder's owner: one left root's
    (0600) would keep the daemon, which runs as that user, from its archive's lock."""
    if os.geteuid() == 0:
        owner = root.stat()
        os.fchown(lock, owner.st_uid, owner.st_gid)
