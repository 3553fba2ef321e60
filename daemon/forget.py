"""``facewatch gallery remove NAME --forget``: beyond the gallery, the face archive's visits
that show the person are deleted, and what facewatch cannot delete is listed (the steps are
in docs/operations.md, "Forgetting a person")."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from daemon.archive_list import visits_of
from daemon.config import Config, ConfigError
from daemon.gallery import Gallery
from daemon.gallery_file import GalleryError
from daemon.gallery_names import twin_key


def archives_to_forget(args: argparse.Namespace, config: Config | None) -> list[Path]:
    """The face archives ``--forget`` deletes visits from: each ``--archive`` (two daemons
    sharing the gallery: both theirs, in one run, as her enrolled photos are known only
    while she is enrolled), else the ``--config``'s archive.dir (none: it has none, said on
    stdout). ConfigError when neither is given; GalleryError when a folder cannot be read
    (nothing is deleted then)."""
    if args.archive:
        roots = [Path(folder) for folder in args.archive]
    elif config is not None:
        if config.archive.dir is None:
            print(f"{args.config}: archive.dir is not set: no face archive to delete visits from")
            return []
        roots = [Path(config.archive.dir)]
    else:
        raise ConfigError(
            "--forget needs the face archive: --config FILE (its archive.dir) or --archive DIR"
        )
    for root in roots:
        if root.exists() and not (root.is_dir() and os.access(root, os.R_OK | os.W_OK | os.X_OK)):
            raise GalleryError(
                f"{root}: the face archive cannot be read and written by this user; run as "
                "the daemon's user (the `fw` helper of docs/operations.md, section 2); nothing "
                "was removed"
            )
    return roots


def forget_visits(root: Path, name: str, photos: set[str]) -> None:
    """Delete the visits under ``root`` that show ``name`` (``visits_of``), each said;
    GalleryError naming the folder that could not be (the person is still enrolled then: the
    command can be run again)."""
    visits = visits_of(root, name, photos) if root.is_dir() else []
    for folder in visits:
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            raise GalleryError(
                f"{folder}: could not be deleted ({exc.strerror or exc}); {name} is still "
                "enrolled: fix it and run the command again"
            ) from exc
        print(f"deleted {folder}")
    print(f"deleted {len(visits)} visit(s) of {name} from the face archive {root}")


def forget_removed(gallery: Gallery, roots: list[Path], name: str) -> None:
    """``--forget`` of someone no longer enrolled (removed earlier, or the command run again):
    the visits an event named them in are deleted (those holding a photo they were enrolled
    from can no longer be told), with a note. A name enrolled in another case or spelling
    (``Ada`` for ``ada``), or close to an enrolled one when no visit names it, is a typo:
    GalleryError naming that one, and nothing is deleted (visits are found whatever the
    case: they would have been deleted, and the person left enrolled)."""
    named = [visit for root in roots if root.is_dir() for visit in visits_of(root, name, set())]
    close = gallery.close_name(name)
    if close is not None and (not named or twin_key(close) == twin_key(name)):
        gallery.sources_of(name)  # GalleryError: "no identity named 'Zoe'; did you mean 'Zoë'?"
    print(
        f"note: {name} is not in the gallery (removed earlier?); forgotten elsewhere as asked",
        file=sys.stderr,
    )
    for root in roots:
        forget_visits(root, name, set())


def say_what_remains(name: str, config: Config | None) -> None:
    """What facewatch cannot delete, each with where it is (docs: Forgetting a person)."""
    events = config.events if config is not None else None
    jsonl = events.jsonl_file if events is not None else None
    lines = [
        f"the events file {jsonl} and its rotated copies: events naming {name}"
        if jsonl
        else "the events JSON-lines file (events.jsonl_file), if one is kept",
        "the journal, when events.stdout is on under systemd: every event line",
        "gallery exports (backups): a restore brings them back",
        f'Prometheus: facewatch_recognitions_total{{identity="{name}"}} until its retention',
        "Home Assistant's history (recorder) of their entities, and a camera's last face",
        "events spooled for MQTT while the broker is away are still sent",
        "the photos they were enrolled from, wherever you keep them",
    ]
    print("not reached by facewatch (docs/operations.md, 'Forgetting a person'):")
    for line in lines:
        print(f"  {line}")
