"""`facewatch gallery remove`: a person and their enrolled faces, or with ``--photos`` only the
faces enrolled from some photos; with ``--forget`` their face archive visits too
(daemon/forget.py)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from daemon import forget
from daemon.config import ConfigError
from daemon.gallery import Gallery
from daemon.gallery_choice import daemon_config, gallery_path
from daemon.gallery_file import GalleryError
from engines.base import file_sha256
from engines.image_files import folder_files

SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _remove(args: argparse.Namespace) -> int:
    if args.archive is not None and not args.forget:
        raise ConfigError("--archive is for --forget (the face archive to delete visits from)")
    if args.photos is not None:
        if args.forget:
            raise ConfigError(
                "--photos keeps the person, --forget removes them whole: give one of the two"
            )
        return _remove_photos(args)
    config = daemon_config(args)
    roots = forget.archives_to_forget(args, config) if args.forget else []
    with Gallery.open(gallery_path(args), writable=True) as gallery:
        if args.forget and not gallery.knows(args.name):  # removed before: the rest as asked
            forget.forget_removed(gallery, roots, args.name)
            forget.say_what_remains(args.name, config)
            return 0
        for root in roots:  # first: their enrolled photos are known only while enrolled
            forget.forget_visits(root, args.name, gallery.sources_of(args.name))
        count = gallery.remove(args.name)
    print(f"removed {args.name} ({count} face(s))")
    if args.forget:
        forget.say_what_remains(args.name, config)
    return 0


def _remove_photos(args: argparse.Namespace) -> int:
    """``gallery remove NAME --photos ...``: the faces enrolled from those photos go, in one
    transaction; the person stays with the rest (the daemon renames no one: it only stops
    matching those faces), or goes with the last, as a plain remove."""
    photos = {given: _photo_hashes(given) for given in args.photos}
    with Gallery.open(gallery_path(args), writable=True) as gallery:
        removed, left = gallery.remove_photos(args.name, photos)
    if left:
        print(f"removed {removed} face(s) of {args.name} enrolled from those photos; {left} remain")
    else:
        print(
            f"removed {removed} face(s) of {args.name} enrolled from those photos: they were "
            f"all of {args.name}'s faces, so {args.name} is removed from the gallery, as "
            f"`gallery remove {shlex.quote(args.name)}` does"
        )
    return 0


def _photo_hashes(given: str) -> set[str]:
    """The SHA-256s a ``--photos`` argument stands for: a photo's, a folder's photos' (at
    any depth, as enroll takes a folder: a face archive visit's images), or a SHA-256 as
    `gallery list NAME` shows it (its photo deleted since). GalleryError naming it when it
    is none of these."""
    path = Path(given)
    try:
        if path.is_dir():
            files = folder_files(path).files
            if not files:
                raise GalleryError(f"{given}: no photos in this folder; nothing was removed")
            return {file_sha256(file) for file in files}
        if path.exists() or not SHA256.fullmatch(given):
            return {file_sha256(path)}
    except OSError as exc:
        raise GalleryError(
            f"{given}: cannot be read ({exc.strerror or exc}); nothing was removed"
        ) from None
    return {given.lower()}
