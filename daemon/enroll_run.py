"""`facewatch enroll`'s person-by-person run (daemon/enroll_cli.py starts it): each person's
photos read (daemon/enroll_checks.py), their crops embedded EMBED_CHUNK at a time, the people
checked and stored every STORE_EVERY faces, each batch in one transaction (``Writer``), so
that memory stays that of a chunk and a stop keeps the people stored; what it did
(``Run.tally``), for its summary (daemon/enroll_summary.py).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from daemon.archive_files import is_visit_folder
from daemon.calibration import ClosePeople, look_alikes
from daemon.cli_models import Models
from daemon.enroll_checks import Enrolled, check_photo, drop_unlike, enroll_crop, terminal_text
from daemon.enroll_plan import Person
from daemon.enroll_summary import new_gallery_threshold, say_summary
from daemon.face_quality import QualityGates, Rejected
from daemon.gallery import Gallery, remove_created
from daemon.gallery_file import GalleryError
from daemon.gallery_names import lookup_name
from daemon.gallery_write import Enrollment
from daemon.journal import print_error
from engines.facenet import FaceNet
from engines.images import ImageError

# crops embedded at once: what enroll holds of the images it read (a crop is 160x160x3
# bytes, its float copy 4 times that); a run of 5,528 photos held them all, 4.9 GB at the end
EMBED_CHUNK = 64
# faces stored in one transaction, whole people: what a kill or a power cut can lose (and
# Ctrl-C, when it comes as they are stored); one commit per person is slow on an SD card
STORE_EVERY = 64


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


class Run:
    """An enroll's photos read person by person, their crops embedded EMBED_CHUNK at a time,
    the people stored every STORE_EVERY faces (each in one transaction): memory stays that
    of a chunk, and a stop keeps the people stored."""

    def __init__(
        self,
        args: argparse.Namespace,
        models: Models,
        gates: QualityGates,
        enrolled: Enrolled,
        writer: Writer,
    ) -> None:
        self.args, self.models, self.gates, self.enrolled = args, models, gates, enrolled
        self.writer, self.tally, self.pending = writer, _Tally(), _Pending()
        self.faces = _Faces(enrolled.vectors, enrolled.owners)  # for the look-alikes
        self.known = {lookup_name(name) for name in enrolled.names}
        self.refused: set[str] = set()  # people with a rejected photo (without --skip-bad)
        self.rejected_of: Counter[str] = Counter()  # each person's photos rejected
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
            say_summary(self, {})
        where = people[min(self.done, len(people) - 1)].name
        print(
            terminal_text(
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

    def _read(self, person: Person, bar: tqdm[Any]) -> None:
        """Each of ``person``'s photos to a crop (embedded each EMBED_CHUNK), or rejected."""
        pending = self.pending
        mark = len(pending.accepted)
        try:
            self._read_photos(person, bar)
        except KeyboardInterrupt:
            pending.drop_from(mark, person.name)  # a person half read is not stored
            raise
        pending.people.append(person)

    def _read_photos(self, person: Person, bar: tqdm[Any]) -> None:
        pending = self.pending
        for reason in person.rejected:
            self._reject(person.name, terminal_text(reason))
        for path, sha in person.photos:
            try:
                crop = enroll_crop(self.models, self.gates, path)
                sha = sha or check_photo(self.enrolled.holders, person.name, path)
                pending.accepted.append((person.name, path, sha))
                pending.crops.append(crop)
            except (Rejected, ImageError, ValueError, OSError) as exc:
                self._reject(
                    person.name,
                    terminal_text(str(exc) if str(path) in str(exc) else f"{path}: {exc}"),
                )
            bar.update()
            if len(pending.crops) >= EMBED_CHUNK:
                self._embed()

    def _reject(self, name: str, reason: str) -> None:
        self.pending.rejected[name] += 1
        self.rejected_of[name] += 1
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
            embeddings, accepted = drop_unlike(self.enrolled, embeddings, accepted, rejected)
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


class Writer:
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
                self.path, net.model_id, net.embedding_size, **new_gallery_threshold(net)
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
