"""`facewatch gallery calibrate`: the gallery's default threshold chosen from the enrolled
people themselves (what it measured, the people close to each other, why a threshold is not
stored, which of the daemon's keys override it); and the warning of a gallery grown large at
its starting threshold (``uncalibrated``: gallery commands, enroll, identify and `run`)."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.calibration import (
    MAX_STORED_FRR,
    Calibration,
    ClosePeople,
    calibrate,
    closest_people,
    strangers_named,
)
from daemon.config import Config
from daemon.gallery import Gallery, shown_threshold
from daemon.gallery_choice import daemon_config, gallery_path
from daemon.gallery_file import GalleryError
from daemon.journal import print_error
from engines.facenet import DEFAULT_THRESHOLD, starting_threshold

# from this many enrolled faces, a gallery at its starting threshold is worth calibrating
UNCALIBRATED_FACES = 120  # calibrate needs 100 impostor trials for FAR 1 %: about 120 faces
# above this share of strangers named, `run` logs a gallery at its starting threshold as an
# error, not a warning
SERIOUS_SHARE = 0.2
# under this share of strangers named (measured on the gallery's own faces), a gallery at its
# starting threshold is not warned about: it names no more than calibrated ones do (calibrate
# at its 1 % false-accept rate per comparison named 1.5 % of strangers at 30-70 people x 5
# CelebA photos), so `gallery calibrate` would hardly change what it names; and at 120 faces
# (where the warning starts) 2 % is 2 faces, one pair of look-alikes, within the measure's
# own roughness. A warning there told users to fix what was fine ('under 1% of strangers')
QUIET_SHARE = 0.02


@dataclass(frozen=True)
class Uncalibrated:
    """A gallery grown large at its starting threshold: what to tell the user, and the share
    of strangers it would name (``calibration.strangers_named``)."""

    text: str
    share: float

    @property
    def serious(self) -> bool:
        """More strangers named than SERIOUS_SHARE: `run` logs it as an error."""
        return self.share > SERIOUS_SHARE


def uncalibrated(gallery: Gallery, model_extra: dict[str, Any]) -> Uncalibrated | None:
    """What to tell the user of a gallery of UNCALIBRATED_FACES or more faces still at the
    threshold a new gallery of its model starts at (not set by `gallery threshold` or
    `gallery calibrate`): how many strangers it would name there, measured on its own
    faces; None for any other, and for one that would name under QUIET_SHARE of them. The
    model's threshold holds per comparison, and a stranger is compared with every enrolled
    face: 1,565 people named 83 % of strangers."""
    start = starting_threshold(model_extra)
    start = DEFAULT_THRESHOLD if start is None else start
    people = gallery.identities()
    faces = sum(person.embeddings for person in people)
    if faces < UNCALIBRATED_FACES or len(people) < 2 or abs(gallery.threshold - start) >= 5e-4:
        return None
    vectors, owners, _, _ = gallery.embeddings()
    own = {person.name: person.threshold for person in people}
    limits = np.array([gallery.threshold if own.get(o) is None else own[o] for o in owners])
    share, tried = strangers_named(vectors, owners, limits)
    if share < QUIET_SHARE:
        return None
    return Uncalibrated(
        f"{faces} faces of {len(people)} people, still at the threshold a new gallery starts "
        f"at ({shown_threshold(start)}): at it about {share:.0%} of strangers would be named as one of "
        f"your {len(people)} people (measured on your own faces, each of {tried} taken as a "
        "stranger's against everyone else's: the more faces, the more strangers are named): "
        "run `facewatch gallery calibrate`, which chooses a threshold from your own people",
        share,
    )


def warn_uncalibrated(path: Path, model_extra: dict[str, Any]) -> None:
    """``uncalibrated``'s warning for the gallery at ``path``, on stderr, when it has one."""
    try:
        with Gallery.open(path) as gallery:
            warning = uncalibrated(gallery, model_extra)
    except GalleryError:
        return  # (a warning only: the command that wrote it said what went wrong)
    if warning is not None:
        print(f"warning: gallery {path}: {warning.text}", file=sys.stderr)


def _calibrate(args: argparse.Namespace) -> int:
    with Gallery.open(gallery_path(args), writable=not args.dry_run) as gallery:
        vectors, owners, _, _ = gallery.embeddings()
        in_use = gallery.threshold
        try:
            result = calibrate(vectors, owners, args.target_far)
        except ValueError as exc:
            raise GalleryError(f"{gallery.path}: {exc}") from None
        unusable = _unusable(result, args.force)
        if not args.dry_run and not unusable:
            gallery.set_threshold(None, result.threshold)
    print(
        f"calibrated on {result.people} people, {result.faces} faces "
        f"({result.genuine} with another face of the same person), leave-one-out: "
        f"{result.impostor} impostor trials"
    )
    print(f"threshold {result.threshold:.4f} (squared L2) for target FAR {result.target_far:g}")
    print(f"expected FAR {_far_shown(result)}, FRR {result.frr:.2%}")
    _show_close_people(*closest_people(vectors, owners, in_use), in_use)
    if unusable:
        print_error(
            f"not stored: {unusable} (the gallery keeps its threshold, {in_use:.4f}; "
            "or set one with `gallery threshold --default VALUE`)"
        )
        return 1
    print("not stored (--dry-run)" if args.dry_run else f"stored as the default in {gallery.path}")
    _say_overridden(args, gallery.path)
    return 0


def _say_overridden(args: argparse.Namespace, gallery: Path) -> None:
    """The gallery's default is not what the daemon of ``--config`` matches with where that
    config sets recognition.threshold or a camera's own (a per-person threshold still wins
    where it is stricter)."""
    config = daemon_config(args)
    if config is None or Path(config.recognition.gallery).resolve() != Path(gallery).resolve():
        return  # (--gallery: another gallery than the daemon's)
    note = _overriding(config, args.config)
    if note is not None:
        print(f"note: {note} (then systemctl restart facewatch)")


def _overriding(config: Config, source: Path) -> str | None:
    """What the daemon matches with in place of the gallery's default, at which cameras;
    None where it matches with the default at every camera."""
    overall = config.recognition.threshold
    enabled = [camera for camera in config.cameras if camera.enabled]
    own = [
        f"cameras[{c.name}].recognition.threshold {shown_threshold(c.recognition.threshold)}"
        for c in enabled
        if c.recognition.threshold is not None
    ]
    keys = len(own) + (overall is not None)
    removed = (
        f"the default applies once {'that key is' if keys == 1 else 'those keys are'} "
        "removed from it"
    )
    if not own:
        if overall is None:
            return None
        return (
            f"the daemon matches with recognition.threshold {shown_threshold(overall)} of "
            f"{source}, not with the gallery's default: {removed}"
        )
    cameras = ", ".join(own)
    if len(own) == len(enabled):
        beneath = (
            "" if overall is None else f", over recognition.threshold {shown_threshold(overall)}"
        )
        return (
            f"no camera matches with the gallery's default: each has its own threshold in "
            f"{source} ({cameras}{beneath}): {removed}"
        )
    if overall is None:
        return (
            f"the daemon matches with {cameras} of {source} at those cameras, not with the "
            f"gallery's default (the other cameras do): {removed}"
        )
    return (
        f"the daemon matches with recognition.threshold {shown_threshold(overall)} of "
        f"{source}, and with {cameras} at those cameras, not with the gallery's default: "
        f"{removed}"
    )


def _show_close_people(close: list[ClosePeople], total: int, in_use: float) -> None:
    """The people a face of one is named as the other at the threshold in use, closest
    first, and those nearer each other than their own faces (the same person?)."""
    if not close:
        print(f"no two people's faces are nearer each other than the threshold {in_use:.4f}")
        return
    print(
        f"people whose nearest faces are nearer each other than the threshold {in_use:.4f} "
        "(a face of one can be named as the other):"
    )
    for pair in close:
        line = f"  {pair.first} and {pair.second}: nearest faces {pair.distance:.4f} apart"
        if pair.same_person:
            own = ", ".join(f"{d:.4f}" for d in pair.own if math.isfinite(d))
            line += f", nearer than their own faces ({own}): the same person?"
        print(line)
    if total > len(close):
        print(f"  ... and {total - len(close)} more pair(s)")


def _far_shown(result: Calibration) -> str:
    """The expected false-accept rate with the count it comes from; none below the threshold
    is "under 1 in N" (N trials cannot show a smaller rate), not 0 %."""
    if result.false_accepts == 0:
        return f"under 1 in {result.impostor} (none of {result.impostor} impostor trials below it)"
    return (
        f"{result.far:.2%} ({result.false_accepts} of {result.impostor} impostor trials below it)"
    )


def _unusable(result: Calibration, force: bool) -> str:
    """Why a calibrated threshold must not be stored ('' when it may be)."""
    if result.target_far < result.far_resolution and not force:
        # the threshold would be the closest two people's distance: strangers pass it
        needs = (
            f"that needs {math.ceil(1 / result.target_far)} or more"
            if result.target_far
            else "no number of trials can show a rate of 0"
        )
        return (
            f"{result.impostor} impostor trials ({result.faces} faces) cannot measure a "
            f"false-accept rate of {result.target_far:g} ({needs}: the smallest these can "
            f"tell from 0 is {result.far_resolution:.2%}); --force stores it anyway; enroll "
            "more people and more photos of each"
        )
    if result.far > result.target_far:
        return (
            f"no threshold keeps the false-accept rate at {result.target_far:g} on these "
            "people (faces of different people are as close as faces of one person)"
        )
    if result.frr >= 1.0:
        return "that threshold would reject every enrolled person"
    if result.frr > MAX_STORED_FRR and not force:
        return (
            f"that threshold would turn away {result.frr:.1%} of the enrolled people's own "
            f"faces (more than {MAX_STORED_FRR:.0%}): this model cannot tell these people "
            f"apart at a false-accept rate of {result.target_far:g} (faces of one person lie "
            "as far apart as faces of different people), or two names are one person (see "
            "'the same person?' above: `gallery remove` one and enroll its photos under the "
            "other's name); --force stores it anyway"
        )
    return ""
