"""What `facewatch enroll` checks of each photo and face as it reads them
(daemon/enroll_cli.py runs it): the one face of a photo (at the place a face archive visit's
visit.json gives, found again with looser thresholds there), its crop; one photo, one person
(by SHA-256); and the faces unlike their person's others, a visit whose images show two
people among them. Messages go through ``terminal_text``: a path is shown, never obeyed.
"""

from __future__ import annotations

import functools
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from daemon.archive_files import VISIT_FILE, image_faces
from daemon.calibration import UNLIKE_FACTOR, split_visit, unlike_faces
from daemon.cli_models import Models
from daemon.face_quality import QualityGates, Rejected, face_at, largest_note
from daemon.gallery import shown_threshold
from daemon.low_light import DARK_P99, is_dark
from daemon.peer_exchange import peer_text
from engines.base import file_sha256
from engines.images import read_image, shown

PATH_CHARS = 4096  # a path is shown whole (Linux's longest), only its control characters hidden


def terminal_text(path: Path | str) -> str:
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


def enroll_crop(models: Models, gates: QualityGates, path: Path) -> np.ndarray:
    """The aligned crop of the one face to enroll from ``path``; Rejected / ImageError."""
    if path.is_dir():
        raise Rejected("folder holds no images")
    # Not brightened as the cameras' frames are: the lift raises the noise with the face,
    # and a blurred dark photo then passes the sharpness check
    gates.check_seen_score(archived_score(path))
    image = read_image(str(path))
    if is_dark(image):
        tqdm.write(terminal_text(f"note: {path}: {DARK_NOTE}"), file=sys.stderr)
    expected = archived_face(path)
    found = models.detector.detect([image])[0]
    if expected is not None and face_at(found, expected) is None:  # see ARCHIVE_THRESHOLDS
        loosest = zip(models.detector.config.thresholds, ARCHIVE_THRESHOLDS, strict=True)
        detector = models.detector.with_config(thresholds=tuple(min(t, a) for t, a in loosest))
        found = detector.detect([image])[0]
    k = gates.choose_face(found, image.shape[:2], expected)
    if expected is None and len(found) > 1:  # --largest chose: say which, to be checked
        tqdm.write(terminal_text(f"note: {path}: {largest_note(found, k)}"), file=sys.stderr)
    crop = models.facenet.align(image, found, [k])
    face: np.ndarray = crop[0]
    gates.check_sharpness(face)
    return face


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
        return image_faces(about)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(
            f"warning: {about} cannot be read ({type(exc).__name__}: {exc}): its images are "
            "taken as any photo is (one face each), not at the face it says",
            file=sys.stderr,
        )
        return {}


@dataclass
class Enrolled:
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


def check_photo(holders: dict[str, set[str]], name: str, path: Path) -> str:
    """The photo's SHA-256; Rejected when it is enrolled (or being enrolled) as someone else:
    one photo, one person."""
    sha = file_sha256(path)
    others = sorted(holders.get(sha, set()) - {name})
    if others:
        raise Rejected(f"the same photo is enrolled as {', '.join(others)}")
    holders.setdefault(sha, set()).add(name)
    return sha


def source_of(path: Path) -> Path:
    """Where an image comes from, for the unlike checks: its face archive visit (one track:
    its images lie near each other whoever they show), else the photo itself."""
    return path.parent if (path.parent / VISIT_FILE).is_file() else path


def drop_unlike(
    enrolled: Enrolled,
    embeddings: np.ndarray,
    accepted: list[tuple[str, Path, str]],
    rejected: list[str],
) -> tuple[np.ndarray, list[tuple[str, Path, str]]]:
    """The accepted faces less those of a visit that shows two people and those unlike their
    person's other faces (each added to ``rejected`` with the reason, and said)."""
    names = [name for name, _, _ in accepted]
    threshold_of = enrolled.threshold_of(set(names))
    sources = [source_of(path) for _, path, _ in accepted]
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
        siblings = sum(sources[k] == source_of(path) for k in keep) > 1
        reason = terminal_text(
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
        reason = terminal_text(
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
