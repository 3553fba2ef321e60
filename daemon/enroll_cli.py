"""`facewatch enroll`: add people to the gallery from photos, a folder per person, or the
face archive's visits.

Every photo must show one face (or ``--largest``), large and sharp enough, not a profile
(``daemon.face_quality.QualityGates``, checked in ``daemon.enroll_checks``); a photo enrolled
as someone else is refused (one photo, one person), and so is a face unlike all of its
person's other faces (someone else, or a photo very unlike the others, unless
``--allow-mismatch``): the images of one archive visit are one track, near each other
whoever it shows, so they do not count for each other, and a visit whose images fall into
two people is refused whole, naming the groups. A new person who looks like someone enrolled
(nearer than their own photos lie) is warned about. Nothing of a person is enrolled while
any of their photos is rejected, unless ``--skip-bad``. Before any photo is read
(``daemon.enroll_plan``): names that only look alike, and one photo in two people's folders,
are refused; the photos already enrolled for their person are skipped, so the same command
again goes on where a stopped enroll left. The photos are read person by person
(``daemon.enroll_run``), their crops embedded EMBED_CHUNK at a time, and the people stored
every STORE_EVERY faces: Ctrl-C or a kill keeps those stored (Ctrl-C says where it stopped,
exit status 130). Enrolled into the gallery of the daemon's ``--config``, it says that a
running daemon takes the change within 2 s (``scheduler.GALLERY_CHECK_S``) and how to check
that a camera names them.
Exit status: 0 done, 1 an image or the gallery refused (the reason is printed; with
``--skip-bad``, a person none of whose photos could be enrolled, named), 2 a model or
argument problem.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from daemon import gallery_calibrate, gallery_choice
from daemon.archive_files import archive_level
from daemon.cli_args import number
from daemon.cli_models import add_model_options, load_models, photo_files
from daemon.cli_output import progress_wanted
from daemon.enroll_checks import Enrolled, source_of, terminal_text
from daemon.enroll_plan import Plan, Refused, plan
from daemon.enroll_run import Run, Writer
from daemon.enroll_summary import first_few, new_gallery_threshold, say_summary
from daemon.face_quality import (
    DEFAULT_MIN_FACE_PX,
    DEFAULT_MIN_SHARPNESS,
    MAX_PROFILE_OFFSET,
    MIN_FACE_SCORE,
    QualityGates,
)
from daemon.gallery import Gallery
from daemon.gallery_file import GalleryError
from daemon.gallery_names import clean_name, lookup_name
from daemon.journal import print_error
from engines import EngineError
from engines.facenet import DEFAULT_THRESHOLD, FaceNet
from engines.image_files import is_hidden
from engines.mtcnn import MTCNNConfig


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "enroll",
        help="add people to the gallery from photos",
        description="Enroll one person from photos (--name NAME IMAGE...) or many from a "
        "folder with one sub-folder per person (--dir DIR). Every photo must show exactly one "
        "face (or use --largest), large and sharp enough, not turned to the side; in a face "
        "archive visit folder, the face its visit.json places is taken. A rejected photo is reported with its reason "
        "and then nothing of its person is enrolled, unless --skip-bad (the other people "
        "are). Names that only look alike (Ada, ada) and one photo in two people's folders "
        "are refused before any photo is read; photos already enrolled for their person are "
        "not read again, so the same command again goes on where a stopped enroll left "
        "(Ctrl-C keeps the people done and says where it stopped: exit status 130). Exit status: 0 done, 1 a photo or "
        "the gallery refused (with --skip-bad: no photo at all could be enrolled, or a person "
        "got none and is not in the gallery already, named in the summary), 2 a model or "
        "argument problem.",
    )
    p.add_argument(
        "images",
        nargs="*",
        type=Path,
        metavar="IMAGE",
        help="photos of --name (or folders of them)",
    )
    p.add_argument("--name", help="who the photos show")
    p.add_argument(
        "--dir",
        type=Path,
        help="folder of per-person sub-folders (name = folder, in UTF-8; the photos anywhere "
        "inside it, symlinked folders too; hidden and @ folders such as .thumbnails and @eaDir "
        "are skipped; not the face archive's folders: enroll its visits with --name)",
    )
    _add_check_options(p)
    add_model_options(p)
    p.set_defaults(func=run_enroll)


def _add_check_options(p: argparse.ArgumentParser) -> None:
    """The options of what a photo must pass, and of what is done with those that do not."""
    p.add_argument(
        "--largest",
        action="store_true",
        help="several faces: enroll the largest (each such photo is noted with the box taken)",
    )
    p.add_argument(
        "--min-face-px",
        type=number(float, ge=0),
        default=DEFAULT_MIN_FACE_PX,
        help=f"shortest side of the face box, pixels (default {DEFAULT_MIN_FACE_PX:.0f})",
    )
    p.add_argument(
        "--min-sharpness",
        type=number(float, ge=0),
        default=DEFAULT_MIN_SHARPNESS,
        help="blur gate: variance of the Laplacian of the aligned grey face crop "
        f"(default {DEFAULT_MIN_SHARPNESS:.0f}; 0 disables)",
    )
    p.add_argument(
        "--allow-profile",
        action="store_true",
        help="enroll a face turned to the side (a profile), or a face archive image whose "
        f"face the camera's detector scored under {MIN_FACE_SCORE:g} (a head turned away or "
        "looking down): refused by default, as they match strangers' faces and their own "
        "person's frontal ones poorly",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="enroll the good photos even if others fail, leave out the folders whose names "
        "only look like another (Ada beside ada, or beside an enrolled Ada) and a photo "
        "given for two people; a person none of whose photos could be enrolled (and not in "
        "the gallery already) is named ('not enrolled: NAME') and the exit status is 1",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="enroll a face even when it lies farther than 1.3 times the match threshold "
        "from every other face of its person (enrolled or in this enroll, not counting the "
        "other images of its own archive visit; checked when there are 2 or more): such a "
        "photo is refused, as it shows someone else or is very unlike the others (sunglasses, "
        "years apart); and a visit whose images fall into groups that far apart (a track "
        "that passed from one person to another), refused whole",
    )


def _enroll_jobs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, image) pairs from the arguments; ValueError on a usage mistake."""
    return _folder_jobs(args) if args.dir is not None else _named_jobs(args)


def _folder_jobs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """--dir: (name, image) pairs of its per-person folders."""
    if args.name or args.images:
        raise ValueError("--dir takes no --name and no IMAGE arguments")
    if not args.dir.is_dir():
        what = "not a folder" if args.dir.exists() else "no such folder"
        raise ValueError(f"{args.dir}: {what} (one sub-folder per person expected)")
    level = archive_level(args.dir)
    if level is not None:
        raise ValueError(
            f"{args.dir}: {level} folder of the face archive, not a folder of per-person "
            "folders: enroll a visit with --name NAME VISIT_FOLDER... (`facewatch archive "
            "list` finds them)"
        )
    entries = sorted(p for p in args.dir.iterdir() if not is_hidden(p.name))
    people = [p for p in entries if p.is_dir()]
    if not people:
        raise ValueError(f"{args.dir}: no sub-folders (one per person expected)")
    for loose in (p for p in entries if not p.is_dir()):
        print(f"skipped {terminal_text(loose)}: not in a person's folder", file=sys.stderr)
    return [(_name(p.name, p), image) for p in people for image in photo_files(p)]


def _named_jobs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """--name NAME IMAGE...: (name, image) pairs of the images and folders given."""
    if not args.name:
        raise ValueError("give --name NAME with IMAGE arguments, or --dir DIR")
    name = _name(args.name, None)
    if not args.images:
        raise ValueError(f"no images given for {name!r}")
    for path in args.images:
        level = archive_level(path) if path.is_dir() else None
        if level not in (None, "a visit"):
            raise ValueError(
                f"{path}: {level} folder of the face archive: it holds many visits, of "
                "different people; give the visit folders of this one (`facewatch archive "
                "list` finds them)"
            )
    return [(name, image) for path in args.images for image in photo_files(path)]


def _name(name: str, folder: Path | None) -> str:
    try:
        return clean_name(name)
    except GalleryError as exc:
        why = f"{terminal_text(folder)}: {exc}" if folder else f"--name: {exc}"
        if "not valid UTF-8" in str(exc):
            why += (
                "; rename the folder in UTF-8 (`convmv -f latin1 -t utf8 -r "
                f"{terminal_text(folder.parent)}` lists the renames, with --notest it makes them)"
                if folder
                else "; type it in UTF-8 (a terminal or script in another encoding sent it)"
            )
        raise ValueError(why) from None


def _check_gallery(path: Path, net: FaceNet) -> Enrolled:
    """Refuse early (before any work) a gallery of another model or one we cannot write;
    returns what it holds."""
    if not path.exists() and not path.is_symlink():
        default = new_gallery_threshold(net).get("threshold", DEFAULT_THRESHOLD)
        return Enrolled({}, [], np.zeros((0, net.embedding_size), np.float32), [], {}, default)
    with Gallery.open(path, net.model_id, writable=True) as gallery:
        vectors, owners, _, _ = gallery.embeddings()
        identities = gallery.identities()
        own = {i.name: i.threshold for i in identities if i.threshold is not None}
        names = [i.name for i in identities]
        return Enrolled(gallery.sources(), names, vectors, owners, own, gallery.threshold)


def _gates(args: argparse.Namespace) -> QualityGates:
    """The options' gates; a face must score what the daemon needs to see it (its --config's
    detection.thresholds, else the detector's defaults)."""
    config = gallery_choice.daemon_config(args)
    return QualityGates(
        args.min_face_px,
        args.min_sharpness,
        args.largest,
        math.inf if args.allow_profile else MAX_PROFILE_OFFSET,
        min_score=config.detection.thresholds[2] if config else MTCNNConfig.thresholds[2],
        min_seen_score=0.0 if args.allow_profile else MIN_FACE_SCORE,
    )


def run_enroll(args: argparse.Namespace) -> int:
    try:
        jobs = _enroll_jobs(args)
        models = load_models(args)
    except (ValueError, EngineError) as exc:
        print_error(str(exc))
        return 2
    gallery_path = gallery_choice.gallery_path(args)
    gates = _gates(args)
    try:
        enrolled = _check_gallery(gallery_path, models.facenet)
    except GalleryError as exc:
        print_error(str(exc))
        return 1
    recognition = gallery_choice.daemon_recognition(args)
    if recognition is not None and recognition.threshold is not None:
        enrolled.default = recognition.threshold  # the daemon matches with it, as identify
    show = progress_wanted(args) and len(jobs) > 1
    try:
        work = plan(
            jobs, enrolled.names, enrolled.holders, args.skip_bad, show, args.dir is not None
        )
    except Refused as exc:
        print_error("\n  ".join(terminal_text(line) for line in str(exc).split("\n  ")))
        return 1
    for name, why in work.skipped.items():
        print(terminal_text(f"skipped {name}: {why}"), file=sys.stderr)
    run = Run(args, models, gates, enrolled, Writer(gallery_path, models.facenet))
    code = run.all(work.people, show)
    return _finish(args, run, jobs, work, recognition) if code is None else code


def _finish(
    args: argparse.Namespace,
    run: Run,
    jobs: list[tuple[str, Path]],
    work: Plan,
    recognition: Any,
) -> int:
    """What the enroll says at its end; its exit status."""
    tally, gallery_path = run.tally, run.writer.path
    if not work.people and work.skipped:  # (--skip-bad: every folder's name a look-alike)
        print_error(
            terminal_text(
                "nothing enrolled: every folder left out, its name only looking like another "
                f"(rename them): {first_few(sorted(work.skipped))}"
            )
        )
        return 1
    if not tally.people and not run.refused:
        print_error(f"no image could be enrolled {_none_taken(jobs, args)}")
        return 1
    left_out = _left_out(work, run)
    if tally.people:
        say_summary(run, left_out)
    if tally.added and recognition is not None and _same_file(gallery_path, recognition.gallery):
        _say_daemon_reads_it(args.config, gallery_path, tally.cameras)
    if tally.added and (recognition is None or recognition.threshold is None):
        # (the daemon matches with the config's recognition.threshold when it sets one)
        gallery_calibrate.warn_uncalibrated(gallery_path, run.models.facenet.meta.extra)
    if run.refused:
        print_error(_refused_message(run, len(jobs), jobs, args))
        return 1
    if left_out:  # as --name with every photo rejected: they are not known
        said = [f"{name} ({why})" for name, why in left_out.items()]
        print_error(terminal_text(f"{len(left_out)} person(s) not enrolled: {first_few(said)}"))
        return 1
    return 0


def _refused_message(
    run: Run, n_jobs: int, jobs: list[tuple[str, Path]], args: argparse.Namespace
) -> str:
    """Without --skip-bad: how many photos were rejected, whose faces were therefore not
    enrolled, and what to do."""
    head = f"{run.tally.rejected} of {n_jobs} image(s) rejected; "
    if not run.tally.people:
        return (
            head
            + "nothing was enrolled "
            + (
                "(fix or drop them, or pass --skip-bad to enroll the others)"
                if run.accepted
                else _none_taken(jobs, args)
            )
        )
    names = sorted(run.refused)
    return terminal_text(
        head + f"nothing of {first_few(names)} was enrolled (fix or drop their rejected photos, "
        "or pass --skip-bad to enroll their others); the other people were, and the same "
        "command again reads only the photos not enrolled yet"
    )


def _none_taken(jobs: list[tuple[str, Path]], args: argparse.Namespace) -> str:
    """What to do when none of the images could be enrolled (--skip-bad would take none):
    other photos, or, for a face archive visit, whose images cannot be made better, another
    visit of the person."""
    if not any(source_of(path) != path for _, path in jobs):
        return "(use other photos of them: one face each, large, sharp, not turned away)"
    config = f" --config {shlex.quote(str(args.config))}" if args.config is not None else ""
    names = sorted({name for name, _ in jobs})
    return (
        "(a face archive visit's images cannot be made better: take another visit of "
        f"{', '.join(names)}; `facewatch archive list{config} --unknown` lists the visits, "
        "`--name NAME` those that named them)"
    )


def _same_file(a: Path, b: str | None) -> bool:
    """Whether the gallery enrolled into is the one the daemon config names."""
    try:
        return b is not None and (a == Path(b) or a.samefile(b))
    except OSError:
        return False


def _say_daemon_reads_it(config: Path, gallery_path: Path, cameras: set[str]) -> None:
    """After an enroll into the gallery of the daemon config given: that a running daemon
    takes it without a restart, and how to check that a camera names them."""
    camera = next(iter(cameras)) if len(cameras) == 1 else "CAMERA"
    print(
        terminal_text(
            f"a daemon running with {config} picks this up within 2 s (it looks at "
            f"{gallery_path} every 2 s; no restart needed); to check that a camera names "
            f"them: `facewatch identify --config {shlex.quote(str(config))} --camera "
            f"{shlex.quote(camera)} PHOTO` on another photo or visit of theirs"
        )
    )


def _left_out(work: Plan, run: Run) -> dict[str, str]:
    """The people asked for who got no photo enrolled and are not in the gallery already
    (nobody will be named so): each with why (how many of their photos were rejected, or
    their folder left out for its name)."""
    got = set(run.tally.people) | run.known
    out = {
        person.name: f"{run.rejected_of[person.name]} of {person.asked} photo(s) rejected"
        for person in work.people
        if person.name not in got and lookup_name(person.name) not in got
    }
    for name in work.skipped:
        out[name] = "folder left out: its name only looks like another"
    return out
