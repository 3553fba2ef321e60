"""Which gallery file and daemon config a command works on: ``--gallery PATH``, else the
``recognition.gallery`` of the daemon config given with ``--config``, else $FACEWATCH_GALLERY,
else ``$XDG_DATA_HOME/facewatch/gallery.sqlite``; the options that say so (the gallery,
enroll and identify commands share them)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from daemon.config import Config
from daemon.config_file import load_config
from daemon.config_pipeline import RecognitionConfig


def default_gallery_path() -> Path:
    env = os.environ.get("FACEWATCH_GALLERY")
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "facewatch" / "gallery.sqlite"


def daemon_config(args: argparse.Namespace) -> Config | None:
    """The daemon config given with --config (paths resolved against it), or None;
    ConfigError for a config that cannot be used."""
    if getattr(args, "config", None) is None:
        return None
    return load_config(args.config, secrets=False)


def daemon_recognition(args: argparse.Namespace) -> RecognitionConfig | None:
    """The ``recognition`` settings of the daemon config given with --config, or None."""
    config = daemon_config(args)
    return None if config is None else config.recognition


def gallery_path(args: argparse.Namespace) -> Path:
    """--gallery, else the --config's recognition.gallery, else the default."""
    if args.gallery is not None:
        return Path(args.gallery)
    recognition = daemon_recognition(args)
    return Path(recognition.gallery) if recognition is not None else default_gallery_path()


def add_gallery_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gallery",
        type=Path,
        default=None,
        help="gallery file (default: the --config's recognition.gallery, else "
        "$FACEWATCH_GALLERY, else $XDG_DATA_HOME/facewatch/gallery.sqlite, i.e. "
        "~/.local/share/facewatch/gallery.sqlite)",
    )
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="the daemon's config file: use its recognition.gallery (and, for enroll and "
        "identify, its recognition.model and flip) unless given here",
    )
