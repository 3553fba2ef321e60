"""``facewatch archive prune``: the visits past keep_days or beyond max_mb deleted once, as the
running daemon deletes them, for an archive no daemon writes; a daemon that holds the
archive's lock prunes it itself, and another prune is waited for (``PRUNE_WAIT_S``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from daemon.archive import FaceArchive
from daemon.archive_files import (
    LOCK_FILE,
    PRUNE,
    PRUNE_WAIT_S,
    archive_level,
    scan_visits,
)
from daemon.claims import Busy, claim
from daemon.config import ConfigError, running_config
from daemon.config_file import load_config
from daemon.config_outputs import ArchiveConfig
from daemon.journal import print_error


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
