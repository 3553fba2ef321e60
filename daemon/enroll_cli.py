"""`facewatch enroll`: add people to the gallery from photos, a folder per person, or the
face archive's visits.

Every photo must show one face (or ``--largest``), large and sharp enough, not a profile
(``daemon.recognition.QualityGates``); a photo enrolled as someone else is refused (one
photo, one person), and so is a face unlike all of its person's other faces (someone else,
or a photo very unlike the others, unless ``--allow-mismatch``): the images of one archive
visit are one track, near each other whoever it shows, so they do not count for each other,
and a visit whose images fall into two people is refused whole, naming the groups. A new
person who looks like someone enrolled (nearer than their own photos lie) is warned about.
Nothing of a person is enrolled while any of their photos is rejected, unless ``--skip-bad``.
Before any photo is read (``daemon.enroll_plan``): names that only look alike, and one photo
in two people's folders, are refused; the photos already enrolled for their person are
skipped, so the same command again goes on where a stopped enroll left. The photos are read
person by person, their crops embedded EMBED_CHUNK at a time, and the people stored every
STORE_EVERY faces: Ctrl-C or a kill keeps those stored (Ctrl-C says where it stopped,
exit status 130). Enrolled into the
gallery of the daemon's ``--config``, it says that a running daemon takes the change within
2 s (``scheduler.GALLERY_CHECK_S``) and how to check that a camera names them.
Exit status: 0 done, 1 an image or the gallery refused (the reason is printed; with
``--skip-bad``, a person none of whose photos could be enrolled, named), 2 a model or
argument problem.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from daemon import gallery_cli
from daemon.archive_files import VISIT_FILE, archive_level, is_visit_folder, read_visit
from daemon.cli_args import number
from daemon.detect_cli import progress_wanted
from daemon.enroll_plan import Person, Plan, Refused, close_names, plan
from daemon.gallery import (
    DEFAULT_THRESHOLD,
    Enrollment,
    Gallery,
    GalleryError,
    remove_created,
    shown_threshold,
)
from daemon.gallery_names import clean_name, lookup_name
from daemon.journal import print_error
from daemon.low_light import DARK_P99, is_dark
from daemon.recognition import (
    DEFAULT_MIN_FACE_PX,
    DEFAULT_MIN_SHARPNESS,
    MAX_PROFILE_OFFSET,
    MIN_FACE_SCORE,
    UNLIKE_FACTOR,
    ClosePeople,
    QualityGates,
    Rejected,
    face_at,
    largest_note,
    look_alikes,
    split_visit,
    unlike_faces,
)
from daemon.recognition_cli import Models, add_model_options, load_models, photo_files
from daemon.stream_probe import peer_text
from engines import EngineError
from engines.base import brief, file_sha256, finite_number
from engines.facenet import FaceNet, starting_threshold
from engines.image_files import is_hidden
from engines.images import ImageError, read_image, shown
from engines.mtcnn import MTCNNConfig

# two faces nearer than this share of the threshold are one photo in another file: on the
# shipped model (0.154) one photo as JPEG, PNG, WebP, TIFF... lies within 0.008 of itself,
# two photos of one person 0.05 to 0.08 apart
SAME_PHOTO = 0.1
PATH_CHARS = 4096  # a path is shown whole (Linux's longest), only its control characters hidden


def register(commands: argparse._SubParsersAction) -> None:
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
    add_model_options(p)
    p.set_defaults(func=run_enroll)


def _enroll_jobs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, image) pairs from the arguments; ValueError on a usage mistake."""
    if args.dir is not None:
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
            print(f"skipped {_shown(loose)}: not in a person's folder", file=sys.stderr)
        return [(_name(p.name, p), image) for p in people for image in photo_files(p)]
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
        why = f"{_shown(folder)}: {exc}" if folder else f"--name: {exc}"
        if "not valid UTF-8" in str(exc):
            why += (
                "; rename the folder in UTF-8 (`convmv -f latin1 -t utf8 -r "
                f"{_shown(folder.parent)}` lists the renames, with --notest it makes them)"
                if folder
                else "; type it in UTF-8 (a terminal or script in another encoding sent it)"
            )
        raise ValueError(why) from None


def _shown(path: Path | str) -> str:
    """A path from the disk, or a message naming one, fit for the terminal: a folder named
    with an escape sequence (one that clears the screen) is shown with '?', not obeyed."""
    return peer_text(shown(path), PATH_CHARS)


# A face archive image shows a face the daemon found in the whole frame, where its visit.json
# says: cut out and saved as a JPEG, it can score just under the detector's thresholds. Found
# again with these, only where the visit says it is; its score must still reach what the
# daemon needs to see a face (QualityGates.min_score): the back of a head the daemon saw at
# 0.701 (O-Net's threshold is 0.7) scored 0.651 in its JPEG and was enrolled, naming others.
ARCHIVE_THRESHOLDS = (0.5, 0.5, 0.5)


DARK_NOTE = (
    f"dark photo (its brightest part under grey {DARK_P99} of 255): enroll photos in good light"
)


def _enroll_crop(models: Models, gates: QualityGates, path: Path) -> np.ndarray:
    """The aligned crop of the one face to enroll from ``path``; Rejected / ImageError."""
    if path.is_dir():
        raise Rejected("folder holds no images")
    # Not brightened as the cameras' frames are: the lift raises the noise with the face,
    # and a blurred dark photo then passes the sharpness check
    gates.check_seen_score(archived_score(path))
    image = read_image(str(path))
    if is_dark(image):
        tqdm.write(_shown(f"note: {path}: {DARK_NOTE}"), file=sys.stderr)
    expected = archived_face(path)
    found = models.detector.detect([image])[0]
    if expected is not None and face_at(found, expected) is None:  # see ARCHIVE_THRESHOLDS
        loosest = zip(models.detector.config.thresholds, ARCHIVE_THRESHOLDS, strict=True)
        detector = models.detector.with_config(thresholds=tuple(min(t, a) for t, a in loosest))
        found = detector.detect([image])[0]
    k = gates.choose_face(found, image.shape[:2], expected)
    if expected is None and len(found) > 1:  # --largest chose: say which, to be checked
        tqdm.write(_shown(f"note: {path}: {largest_note(found, k)}"), file=sys.stderr)
    crop = models.facenet.align(image, found, [k])
    gates.check_sharpness(crop[0])
    return crop[0]


def archived_face(path: Path) -> np.ndarray | None:
    """Where the visit's face is in a face archive image (its visit.json says), else None."""
    entry = _visit_images(path.parent).get(path.name)
    return None if entry is None else np.asarray(entry[0], np.float64)


def archived_score(path: Path) -> float | None:
    """The detector's score of a face archive image's face as the camera saw it (its
    visit.json says), else None."""
    entry = _visit_images(path.parent).get(path.name)
    return None if entry is None else entry[1]


@functools.lru_cache(maxsize=64)
def _visit_images(folder: Path) -> dict[str, tuple[list[float], float | None]]:
    """file -> (face_xyxy, score) of a face archive visit's images; {} for any other folder
    (and for a visit whose visit.json cannot be read: said once)."""
    about = folder / VISIT_FILE
    if not about.exists():
        return {}
    try:
        return {
            str(image["file"]): (_box(image["face_xyxy"]), finite_number(image.get("score")))
            for image in read_visit(about)["images"]
            if len(image.get("face_xyxy", ())) == 4
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(
            f"warning: {about} cannot be read ({type(exc).__name__}: {exc}): its images are "
            "taken as any photo is (one face each), not at the face it says",
            file=sys.stderr,
        )
        return {}


def _box(values: Any) -> list[float]:
    """A visit.json face_xyxy as floats; ValueError unless every one is a finite number."""
    box = [finite_number(v) for v in values]
    if None in box:
        raise ValueError(f"face_xyxy {brief(values)} is not numbers")
    return [v for v in box if v is not None]


@dataclass
class _Enrolled:
    """What the gallery holds already, as enroll compares new photos with it."""

    holders: dict[str, set[str]]  # who holds each photo (by SHA-256)
    names: list[str]  # everyone enrolled
    vectors: np.ndarray  # (M, D)
    owners: list[str]
    thresholds: dict[str, float]  # each person's own, where set
    default: float  # the gallery's default threshold (a new gallery's, when there is none)

    def threshold_of(self, names: set[str]) -> dict[str, float]:
        """The threshold each of ``names`` and the enrolled people is matched with."""
        everyone = names | set(self.owners)
        return {name: self.thresholds.get(name, self.default) for name in everyone}


def _check_gallery(path: Path, net: FaceNet) -> _Enrolled:
    """Refuse early (before any work) a gallery of another model or one we cannot write;
    returns what it holds."""
    if not path.exists() and not path.is_symlink():
        default = _threshold_of(net).get("threshold", DEFAULT_THRESHOLD)
        return _Enrolled({}, [], np.zeros((0, net.embedding_size), np.float32), [], {}, default)
    with Gallery.open(path, net.model_id, writable=True) as gallery:
        vectors, owners, _, _ = gallery.embeddings()
        identities = gallery.identities()
        own = {i.name: i.threshold for i in identities if i.threshold is not None}
        names = [i.name for i in identities]
        return _Enrolled(gallery.sources(), names, vectors, owners, own, gallery.threshold)


def _check_photo(holders: dict[str, set[str]], name: str, path: Path) -> str:
    """The photo's SHA-256; Rejected when it is enrolled (or being enrolled) as someone else:
    one photo, one person."""
    sha = file_sha256(path)
    others = sorted(holders.get(sha, set()) - {name})
    if others:
        raise Rejected(f"the same photo is enrolled as {', '.join(others)}")
    holders.setdefault(sha, set()).add(name)
    return sha


def _gates(args: argparse.Namespace) -> QualityGates:
    """The options' gates; a face must score what the daemon needs to see it (its --config's
    detection.thresholds, else the detector's defaults)."""
    config = gallery_cli.daemon_config(args)
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
    gallery_path = gallery_cli.gallery_path(args)
    gates = _gates(args)
    try:
        enrolled = _check_gallery(gallery_path, models.facenet)
    except GalleryError as exc:
        print_error(str(exc))
        return 1
    recognition = gallery_cli.daemon_recognition(args)
    if recognition is not None and recognition.threshold is not None:
        enrolled.default = recognition.threshold  # the daemon matches with it, as identify
    show = progress_wanted(args) and len(jobs) > 1
    try:
        work = plan(jobs, enrolled.names, enrolled.holders, args.skip_bad, show)
    except Refused as exc:
        print_error("\n  ".join(_shown(line) for line in str(exc).split("\n  ")))
        return 1
    for name, why in work.skipped.items():
        print(_shown(f"skipped {name}: {why}"), file=sys.stderr)
    run = _Run(args, models, gates, enrolled, _Writer(gallery_path, models.facenet))
    code = run.all(work.people, show)
    return _finish(args, run, jobs, work, recognition) if code is None else code


def _finish(
    args: argparse.Namespace,
    run: _Run,
    jobs: list[tuple[str, Path]],
    work: Plan,
    recognition: Any,
) -> int:
    """What the enroll says at its end; its exit status."""
    tally, gallery_path = run.tally, run.writer.path
    if not tally.people and not run.refused:
        print_error(f"no image could be enrolled {_none_taken(jobs, args)}")
        return 1
    left_out = _left_out(work, run)
    if tally.people:
        _say_summary(run, left_out)
    if run.refused:
        print_error(_refused_message(run, len(jobs), jobs, args))
        return 1
    if tally.added and recognition is not None and _same_file(gallery_path, recognition.gallery):
        _say_daemon_reads_it(args.config, gallery_path, tally.cameras)
    if tally.added and (recognition is None or recognition.threshold is None):
        # (the daemon matches with the config's recognition.threshold when it sets one)
        gallery_cli.warn_uncalibrated(gallery_path, run.models.facenet.meta.extra)
    if left_out:  # as --name with every photo rejected: they are not known
        print_error(
            _shown(
                f"{len(left_out)} person(s) not enrolled, none of their photos could be: "
                + ", ".join(left_out)
            )
        )
        return 1
    return 0


def _refused_message(
    run: _Run, n_jobs: int, jobs: list[tuple[str, Path]], args: argparse.Namespace
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
    return _shown(
        head + f"nothing of {_few(names)} was enrolled (fix or drop their rejected photos, "
        "or pass --skip-bad to enroll their others); the other people were, and the same "
        "command again reads only the photos not enrolled yet"
    )


def _few(names: list[str]) -> str:
    """Up to SUMMARY_NAMES names, then how many more."""
    shown = ", ".join(names[:SUMMARY_NAMES])
    more = len(names) - SUMMARY_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


# crops embedded at once: what enroll holds of the images it read (a crop is 160x160x3
# bytes, its float copy 4 times that); a run of 5,528 photos held them all, 4.9 GB at the end
EMBED_CHUNK = 64
# faces stored in one transaction, whole people: what a kill or a power cut can lose (and
# Ctrl-C, when it comes as they are stored); one commit per person is slow on an SD card
STORE_EVERY = 64
SUMMARY_NAMES = 20  # more people than this: the summary gives counts, and the names to check
LOOK_ALIKES_SHOWN = 10


@dataclass
class _Tally:
    """What the enroll did, for its summary."""

    added: int = 0  # faces new to the gallery
    offered: int = 0  # faces given to the gallery (some were there already)
    already: int = 0  # photos skipped as enrolled for their person before (or given twice)
    rejected: int = 0  # images rejected
    people: dict[str, bool] = field(default_factory=dict)  # enrolled now or before: new?
    cameras: set[str] = field(default_factory=set)  # of the face archive visits enrolled
    look_alikes: list[ClosePeople] = field(default_factory=list)


@dataclass
class _Pending:
    """People read but not stored yet: their accepted photos, the crops not embedded yet
    (at most EMBED_CHUNK) and the vectors of the others."""

    people: list[Person] = field(default_factory=list)
    accepted: list[tuple[str, Path, str]] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)

    def drop_from(self, mark: int, name: str) -> None:
        """Forget ``name``'s photos, those from ``mark`` on (a person half read)."""
        embedded = len(self.vectors)
        self.accepted = self.accepted[:mark]
        self.vectors = self.vectors[:mark]
        self.crops = self.crops[: max(0, mark - embedded)]
        self.rejected.pop(name, None)


class _Run:
    """An enroll's photos read person by person, their crops embedded EMBED_CHUNK at a time,
    the people stored every STORE_EVERY faces (each in one transaction): memory stays that
    of a chunk, and a stop keeps the people stored."""

    def __init__(
        self,
        args: argparse.Namespace,
        models: Models,
        gates: QualityGates,
        enrolled: _Enrolled,
        writer: _Writer,
    ) -> None:
        self.args, self.models, self.gates, self.enrolled = args, models, gates, enrolled
        self.writer, self.tally, self.pending = writer, _Tally(), _Pending()
        self.faces = _Faces(enrolled.vectors, enrolled.owners)  # for the look-alikes
        self.known = {lookup_name(name) for name in enrolled.names}
        self.refused: set[str] = set()  # people with a rejected photo (without --skip-bad)
        self.accepted = 0  # photos that passed every check
        self.done = 0  # people read and stored (or refused): a stop names the next

    def all(self, people: list[Person], show: bool) -> int | None:
        """Read and store ``people``; None when it ran to the end, else the exit status (a
        stop, said with where, or a gallery that refused)."""
        total = sum(len(p.photos) for p in people)
        bar = tqdm(total=total, desc="enroll", unit="image", disable=not show, file=sys.stderr)
        try:
            with bar:
                for person in people:
                    self._read(person, bar)
                    if len(self.pending.accepted) >= STORE_EVERY:
                        self._flush()
                self._flush()
        except KeyboardInterrupt:
            # the people read whole are kept (a moment's work; none when the stop came as
            # they were stored: they went with the transaction)
            with contextlib.suppress(KeyboardInterrupt, GalleryError):
                self._flush()
            return self._stopped(people, "stopped by Ctrl-C", 130)
        except GalleryError as exc:
            print_error(str(exc))
            return self._stopped(people, "stopped", 1)
        finally:
            self.writer.close()
        return None

    def _stopped(self, people: list[Person], how: str, code: int) -> int:
        """Say what was enrolled and where the enroll stopped: the first person not done."""
        if self.tally.people:
            _say_summary(self, {})
        where = people[min(self.done, len(people) - 1)].name
        print(
            _shown(
                f"{how} at {where} ({self.done + 1} of {len(people)}); "
                + (
                    "what was enrolled is kept: run the same command again to go on (it "
                    "reads only the photos not enrolled yet)"
                    if self.tally.people
                    else "nothing was enrolled"
                )
            ),
            file=sys.stderr,
        )
        return code

    def _read(self, person: Person, bar: tqdm) -> None:
        """Each of ``person``'s photos to a crop (embedded each EMBED_CHUNK), or rejected."""
        pending = self.pending
        mark = len(pending.accepted)
        try:
            self._read_photos(person, bar)
        except KeyboardInterrupt:
            pending.drop_from(mark, person.name)  # a person half read is not stored
            raise
        pending.people.append(person)

    def _read_photos(self, person: Person, bar: tqdm) -> None:
        pending = self.pending
        for reason in person.rejected:
            self._reject(person.name, _shown(reason))
        for path, sha in person.photos:
            try:
                crop = _enroll_crop(self.models, self.gates, path)
                sha = sha or _check_photo(self.enrolled.holders, person.name, path)
                pending.accepted.append((person.name, path, sha))
                pending.crops.append(crop)
            except (Rejected, ImageError, ValueError, OSError) as exc:
                self._reject(
                    person.name, _shown(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
                )
            bar.update()
            if len(pending.crops) >= EMBED_CHUNK:
                self._embed()

    def _reject(self, name: str, reason: str) -> None:
        self.pending.rejected[name] += 1
        self.tally.rejected += 1
        tqdm.write(f"rejected: {reason}", file=sys.stderr)

    def _embed(self) -> None:
        """The crops read so far to vectors (the crops go)."""
        pending = self.pending
        if pending.crops:
            pending.vectors.extend(self.models.facenet.embed(np.stack(pending.crops)))
            pending.crops = []

    def _flush(self) -> None:
        """Check the pending people's faces (each person's against their own and the
        gallery's), warn of look-alikes, and store them in one transaction."""
        self._embed()
        pending, self.pending = self.pending, _Pending()
        self._store(pending)
        self.done += len(pending.people)

    def _store(self, pending: _Pending) -> None:
        embeddings, accepted = self._checked(pending)
        if not self.args.skip_bad:  # a person with a rejected photo: nothing of theirs
            self.refused.update(name for name in pending.rejected if pending.rejected[name])
            keep = [k for k, (name, _, _) in enumerate(accepted) if name not in self.refused]
            embeddings, accepted = embeddings[keep], [accepted[k] for k in keep]
        for person in pending.people:
            if person.name not in self.refused:
                self.tally.already += person.already
                if person.already:
                    self.tally.people.setdefault(person.name, False)
        if not accepted:
            return
        self._look_alikes(embeddings, accepted)
        faces = [
            Enrollment(name, vector, sha)
            for (name, _, sha), vector in zip(accepted, embeddings, strict=True)
        ]
        self.tally.added += self.writer.store(faces)
        self.tally.offered += len(faces)
        for name, path, _ in accepted:
            self.tally.people.setdefault(name, lookup_name(name) not in self.known)
            if is_visit_folder(path.parent):
                self.tally.cameras.add(path.parent.parent.name)
        self.faces.add(embeddings, [name for name, _, _ in accepted])

    def _checked(self, pending: _Pending) -> tuple[np.ndarray, list[tuple[str, Path, str]]]:
        """The pending faces less those of a visit of two people and those unlike their
        person's others (counted as rejected, each said)."""
        if not pending.accepted:
            return np.zeros((0, self.faces.vectors.shape[1]), np.float32), []
        embeddings, accepted = np.stack(pending.vectors), pending.accepted
        if not self.args.allow_mismatch:
            rejected: list[str] = []
            embeddings, accepted = _drop_unlike(self.enrolled, embeddings, accepted, rejected)
            before = Counter(name for name, _, _ in pending.accepted)
            pending.rejected.update(before - Counter(name for name, _, _ in accepted))
            self.tally.rejected += len(rejected)
        self.accepted += len(accepted)
        return embeddings, accepted

    def _look_alikes(self, embeddings: np.ndarray, accepted: list[tuple[str, Path, str]]) -> None:
        """The new people of ``accepted`` who look like someone else (enrolled before, or
        earlier in this enroll, or in this batch), for the end of the run."""
        names = [name for name, _, _ in accepted]
        first = {name for name in names if lookup_name(name) not in self.known}
        if not first:
            return
        vectors = np.concatenate([embeddings, self.faces.vectors])
        owners = [*names, *self.faces.owners]
        threshold_of = self.enrolled.threshold_of(set(owners))
        self.tally.look_alikes.extend(look_alikes(vectors, owners, first, threshold_of))


class _Faces:
    """The gallery's faces and those this enroll stored, grown in place (doubling), for
    the look-alike check of each next person."""

    def __init__(self, vectors: np.ndarray, owners: list[str]) -> None:
        self._buffer = np.array(vectors, np.float32, ndmin=2)
        self._size = len(owners)
        self.owners = list(owners)

    @property
    def vectors(self) -> np.ndarray:
        return self._buffer[: self._size]

    def add(self, vectors: np.ndarray, owners: list[str]) -> None:
        need = self._size + len(vectors)
        if need > len(self._buffer) or self._buffer.shape[1] != vectors.shape[1]:
            grown = np.zeros((max(need, 2 * len(self._buffer)), vectors.shape[1]), np.float32)
            grown[: self._size] = self.vectors
            self._buffer = grown
        self._buffer[self._size : need] = vectors
        self._size = need
        self.owners.extend(owners)


class _Writer:
    """The gallery enroll stores into: opened (or made) at the first faces to store, each
    batch in one transaction; a gallery it made and wrote nothing to is removed again."""

    def __init__(self, path: Path, net: FaceNet) -> None:
        self.path, self.net = path, net
        self.gallery: Gallery | None = None
        self.new = False  # it made the gallery (not when another enroll made it meanwhile)
        self.threshold: float | None = None

    def store(self, faces: list[Enrollment]) -> int:
        """Add ``faces`` in one transaction; how many were new. GalleryError: none were."""
        net = self.net
        if self.gallery is None:
            self.gallery = Gallery.open_or_create(
                self.path, net.model_id, net.embedding_size, **_threshold_of(net)
            )
            self.new = self.gallery.created is not None
            self.threshold = self.gallery.threshold
        try:
            return self.gallery.enroll(faces)
        except BaseException:
            self.close()  # nothing was enrolled by this one: no empty gallery left behind
            raise

    def close(self) -> None:
        if self.gallery is not None:
            if remove_created(self.gallery):
                self.new = False
            self.gallery.close()
            self.gallery = None


def _none_taken(jobs: list[tuple[str, Path]], args: argparse.Namespace) -> str:
    """What to do when none of the images could be enrolled (--skip-bad would take none):
    other photos, or, for a face archive visit, whose images cannot be made better, another
    visit of the person."""
    if not any(_source(path) != path for _, path in jobs):
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
        _shown(
            f"a daemon running with {config} picks this up within 2 s (it looks at "
            f"{gallery_path} every 2 s; no restart needed); to check that a camera names "
            f"them: `facewatch identify --config {shlex.quote(str(config))} --camera "
            f"{shlex.quote(camera)} PHOTO` on another photo or visit of theirs"
        )
    )


def _left_out(work: Plan, run: _Run) -> dict[str, str]:
    """The people asked for who got no photo enrolled and are not in the gallery already
    (nobody will be named so): each with why (how many of their photos were rejected, or
    their folder left out for its name)."""
    got = set(run.tally.people) | run.known
    out = {
        person.name: f"{person.asked} photo(s) rejected"
        for person in work.people
        if person.name not in got and lookup_name(person.name) not in got
    }
    for name in work.skipped:
        out[name] = "folder left out: its name only looks like another"
    return out


def _source(path: Path) -> Path:
    """Where an image comes from, for the unlike checks: its face archive visit (one track:
    its images lie near each other whoever they show), else the photo itself."""
    return path.parent if (path.parent / VISIT_FILE).is_file() else path


def _drop_unlike(
    enrolled: _Enrolled,
    embeddings: np.ndarray,
    accepted: list[tuple[str, Path, str]],
    rejected: list[str],
) -> tuple[np.ndarray, list[tuple[str, Path, str]]]:
    """The accepted faces less those of a visit that shows two people and those unlike their
    person's other faces (each added to ``rejected`` with the reason, and said)."""
    names = [name for name, _, _ in accepted]
    threshold_of = enrolled.threshold_of(set(names))
    sources = [_source(path) for _, path, _ in accepted]
    dropped = _split_visits(embeddings, accepted, sources, threshold_of, rejected)
    keep = [k for k in range(len(accepted)) if k not in dropped]
    unlike = unlike_faces(
        embeddings[keep],
        [names[k] for k in keep],
        enrolled.vectors,
        enrolled.owners,
        threshold_of,
        [sources[k] for k in keep],
    )
    for face in unlike:
        path = accepted[keep[face.index]][1]
        siblings = sum(sources[k] == _source(path) for k in keep) > 1
        reason = _shown(
            f"{path}: does not look like the other photos of {face.name} "
            f"(nearest {face.nearest:.3f}, over {UNLIKE_FACTOR:g}x the threshold "
            f"{shown_threshold(face.threshold)}"
            + ("; the other images of its visit not counted" if siblings else "")
            + "): someone else, or a photo very unlike the others (sunglasses, years apart)? "
            "(--allow-mismatch enrolls it)"
        )
        rejected.append(reason)
        print(f"rejected: {reason}", file=sys.stderr)
        dropped.add(keep[face.index])
    keep = [k for k in range(len(accepted)) if k not in dropped]
    return embeddings[keep], [accepted[k] for k in keep]


def _split_visits(
    embeddings: np.ndarray,
    accepted: list[tuple[str, Path, str]],
    sources: list[Path],
    threshold_of: dict[str, float],
    rejected: list[str],
) -> set[int]:
    """The faces of each visit whose images fall into groups of different people (farther
    apart than the unlike check allows): all refused, the groups named, one line a visit."""
    dropped: set[int] = set()
    for visit in sorted({s for s in sources if sources.count(s) > 1}):
        faces = [k for k, source in enumerate(sources) if source == visit]
        name = accepted[faces[0]][0]
        limit = UNLIKE_FACTOR * threshold_of[name]
        groups = split_visit(embeddings[faces], limit)
        if len(groups) < 2:
            continue
        shown = " vs ".join(
            ", ".join(accepted[faces[i]][1].name for i in group) for group in groups
        )
        first = accepted[faces[groups[0][0]]][1]
        reason = _shown(
            f"{visit}: this visit seems to show {len(groups)} people: {shown} (each group "
            f"lies {UNLIKE_FACTOR:g}x the threshold {shown_threshold(threshold_of[name])} or "
            "more from the others: the track passed from one person to another); look at "
            f"them and enroll the images of {name} alone (`enroll --name {shlex.quote(name)} "
            f"{first} ...`), or --allow-mismatch enrolls them all"
        )
        print(f"rejected: {reason}", file=sys.stderr)
        rejected.extend([reason] * len(faces))  # each image counts as rejected
        dropped.update(faces)
    return dropped


def _say_look_alikes(run: _Run) -> None:
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
            _shown(
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


def _say_summary(run: _Run, left_out: dict[str, str]) -> None:
    """The enroll's summary line (with the look-alike warnings before it, on stderr): each
    person, '(new person)' marking who was not enrolled before; above SUMMARY_NAMES people,
    counts and only the new names close to enrolled ones (a typo of a name meant for someone
    enrolled). A new gallery is said, with its threshold."""
    _say_look_alikes(run)
    tally, writer = run.tally, run.writer
    names = sorted(tally.people)
    new = [name for name in names if tally.people[name]]
    if len(names) <= SUMMARY_NAMES:
        who = ", ".join(f"{name} (new person)" if tally.people[name] else name for name in names)
    else:
        close = close_names(new, run.enrolled.names)
        who = f"{len(new)} new, {len(names) - len(new)} enrolled before" + (
            "; new names close to enrolled ones (a typo?): "
            + _few([f"{name} (like {other})" for name, other in close.items()])
            if close
            else ""
        )
    skipped = tally.offered - tally.added + tally.already
    print(
        _shown(
            f"enrolled {tally.added} new face(s) of {len(names)} person(s) into {writer.path}: "
            + who
            + (
                f" ({skipped} not added: already enrolled, or the same photo twice)"
                if skipped
                else ""
            )
            + (f"; {tally.rejected} image(s) skipped" if tally.rejected else "")
            + (
                "; not enrolled: " + _few([f"{name} ({why})" for name, why in left_out.items()])
                if left_out
                else ""
            )
        )
    )
    if writer.new and writer.threshold is not None:
        net = writer.net
        source = "the model's" if _threshold_of(net) else "facewatch's default, the model has none"
        shown = shown_threshold(writer.threshold)
        print(f"a new gallery: match threshold {shown} ({source}; `gallery threshold` sets it)")
        if not _threshold_of(net):
            _warn_default_threshold(net, shown, writer.path)


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


def _threshold_of(net: FaceNet) -> dict[str, float]:
    """A new gallery's threshold: ``engines.facenet.starting_threshold`` of the model."""
    start = starting_threshold(net.meta.extra)
    return {"threshold": start} if start is not None else {}
