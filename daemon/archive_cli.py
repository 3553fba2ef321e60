"""``facewatch archive list | remove | prune``: the commands' arguments, and ``archive remove``
(``archive list`` is daemon/archive_list.py, ``archive prune`` daemon/archive_prune.py)."""

from __future__ import annotations

import argparse
import shutil
from datetime import datetime
from pathlib import Path

from daemon.archive_files import is_visit_folder
from daemon.archive_list import run_list
from daemon.archive_prune import run_prune
from daemon.cli_args import number
from daemon.config import CHOSEN_CONFIG, ConfigError
from daemon.config_file import load_config
from daemon.config_outputs import ArchiveConfig
from daemon.journal import print_error


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("archive", help="the visits kept in the face archive (archive.dir)")
    sub = p.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    _register_list(sub)
    _register_remove(sub)
    _register_prune(sub)


def _register_list(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _add_visit_filters(listing)
    listing.add_argument(
        "--json", action="store_true", help="one JSON object per visit: its visit.json and folder"
    )
    listing.set_defaults(func=run_list)


def _add_visit_filters(listing: argparse.ArgumentParser) -> None:
    """--camera, --track, --since, and --unknown or --name: which visits are listed."""
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


def _register_remove(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _register_prune(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
