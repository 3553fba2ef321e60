"""`facewatch enroll`'s summary (daemon/enroll_run.py's run ends with it): who was enrolled,
new or before, what was left out and why, the look-alike warnings before it, and a new
gallery's threshold (``new_gallery_threshold``: the model's, or facewatch's default, warned of).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.enroll_checks import terminal_text
from daemon.enroll_plan import close_names
from daemon.gallery import shown_threshold
from engines.facenet import FaceNet, starting_threshold

if TYPE_CHECKING:
    from daemon.enroll_run import Run

# two faces nearer than this share of the threshold are one photo in another file: on the
# shipped model (0.154) one photo as JPEG, PNG, WebP, TIFF... lies within 0.008 of itself,
# two photos of one person 0.05 to 0.08 apart
SAME_PHOTO = 0.1
SUMMARY_NAMES = 20  # more people than this: the summary gives counts, and the names to check
LOOK_ALIKES_SHOWN = 10


def first_few(names: list[str]) -> str:
    """Up to SUMMARY_NAMES names, then how many more."""
    shown = ", ".join(names[:SUMMARY_NAMES])
    more = len(names) - SUMMARY_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def _say_look_alikes(run: Run) -> None:
    """Say which new people look like someone else (enrolled, or in this enroll): nearer
    each other than their own photos lie, as calibrate judges it; one person under two names
    is named either way, one photo as one, the next as the other. The closest
    LOOK_ALIKES_SHOWN, then how many more (a school's enroll found 57 pairs)."""
    pairs = sorted(run.tally.look_alikes, key=lambda pair: pair.distance)
    threshold_of = run.enrolled.threshold_of({pair.second for pair in pairs})
    for pair in pairs[:LOOK_ALIKES_SHOWN]:
        near = (
            "so near that it may be one photo saved twice (as PNG, or by a photo app)"
            if pair.distance < SAME_PHOTO * threshold_of[pair.second]
            else "as near as photos of one person"
        )
        print(
            terminal_text(
                f"warning: {pair.first} looks like {pair.second} ({pair.distance:.3f} apart, "
                f"{near}): the same person? (one person under two names is named as either: "
                "if so, `gallery remove` one and enroll its photos under the other's name)"
            ),
            file=sys.stderr,
        )
    more = len(pairs) - LOOK_ALIKES_SHOWN
    if more > 0:
        print(
            f"warning: and {more} more pair(s) of people as near (the closest {LOOK_ALIKES_SHOWN} "
            "above); `facewatch gallery calibrate --dry-run` lists the gallery's closest",
            file=sys.stderr,
        )


def say_summary(run: Run, left_out: dict[str, str]) -> None:
    """The enroll's summary line (with the look-alike warnings before it, on stderr): each
    person, '(new person)' marking who was not enrolled before; above SUMMARY_NAMES people,
    counts and only the new names close to enrolled ones (a typo of a name meant for someone
    enrolled). A new gallery is said, with its threshold."""
    _say_look_alikes(run)
    tally, writer = run.tally, run.writer
    names = sorted(tally.people)
    print(
        terminal_text(
            f"enrolled {tally.added} new face(s) of {len(names)} person(s) into {writer.path}: "
            + _who(run, names)
            + _not_added(run, left_out)
        )
    )
    if writer.new and writer.threshold is not None:
        _say_new_gallery(writer.net, writer.threshold, writer.path)


def _who(run: Run, names: list[str]) -> str:
    """The summary's people: each by name, or above SUMMARY_NAMES counts of the new and
    the enrolled before, with the new names close to enrolled ones."""
    people = run.tally.people
    if len(names) <= SUMMARY_NAMES:
        return ", ".join(f"{name} (new person)" if people[name] else name for name in names)
    new = [name for name in names if people[name]]
    close = close_names(new, run.enrolled.names)
    return f"{len(new)} new, {len(names) - len(new)} enrolled before" + (
        "; new names close to enrolled ones (a typo?): "
        + first_few([f"{name} (like {other})" for name, other in close.items()])
        if close
        else ""
    )


def _not_added(run: Run, left_out: dict[str, str]) -> str:
    """The summary's end: the faces not added, the images skipped or rejected, and the
    people not enrolled (``left_out``, with why); '' when none."""
    tally = run.tally
    skipped = tally.offered - tally.added + tally.already
    said = ""
    if skipped:
        said += f" ({skipped} not added: already enrolled, or the same photo twice)"
    if tally.rejected:
        said += f"; {tally.rejected} image(s) {'skipped' if run.args.skip_bad else 'rejected'}"
    if left_out:
        said += "; not enrolled: " + first_few(
            [f"{name} ({why})" for name, why in left_out.items()]
        )
    return said


def _say_new_gallery(net: FaceNet, threshold: float, gallery_path: Path) -> None:
    """A new gallery's match threshold, and where it comes from."""
    source = (
        "the model's" if new_gallery_threshold(net) else "facewatch's default, the model has none"
    )
    shown = shown_threshold(threshold)
    print(f"a new gallery: match threshold {shown} ({source}; `gallery threshold` sets it)")
    if not new_gallery_threshold(net):
        _warn_default_threshold(net, shown, gallery_path)


def _warn_default_threshold(net: FaceNet, shown: str, gallery_path: Path) -> None:
    """A new gallery of a model without LFW figures starts at facewatch's default, the usual
    cut of facenet-pytorch's published weights: for a model trained here it can be far
    off (one such model named all 173 strangers of a test at it)."""
    print(
        f"warning: the model ({net.model_id}) has no LFW figures, so {gallery_path} starts at "
        f"{shown}, the usual threshold of facenet-pytorch's published weights, not one "
        "measured for this model: at it, a model you trained can name strangers as people "
        "you enrolled. Once some 120 faces are enrolled, `facewatch gallery calibrate` "
        "sets one from them; or set one with `facewatch gallery threshold --default VALUE`; "
        "`facewatch train validate MODEL.onnx --align --lfw-dir DIR --lfw-pairs pairs.txt "
        "--record` gives the model one for new galleries",
        file=sys.stderr,
    )


def new_gallery_threshold(net: FaceNet) -> dict[str, float]:
    """A new gallery's threshold: ``engines.facenet.starting_threshold`` of the model."""
    start = starting_threshold(net.meta.extra)
    return {"threshold": start} if start is not None else {}
