"""Matching faces against an open gallery (``GalleryMatcher``, part of
``daemon.gallery.Gallery``).

Distances are squared Euclidean between L2-normalised embeddings (0 .. 4; the training
module's LFW thresholds are on this scale). ``match`` is one matrix product against every
enrolled embedding: the nearest one names the identity when it is closer than that
identity's threshold (else the gallery default), otherwise the face is unknown. ``load``
reads every vector and threshold in one read of the file; matching uses them until this
object writes the file itself (``gallery_write``: the next ``match`` reads it again).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from daemon.gallery_check import check_threshold
from daemon.gallery_file import GalleryError, translate
from daemon.gallery_read import GalleryReader


@dataclass(frozen=True)
class Match:
    """The answer for one face: ``identity`` None means unknown. ``nearest`` is the closest
    enrolled identity either way; ``confidence`` is how far inside its threshold the face
    is, ``1 - distance / threshold`` clipped to [0, 1] (0 for unknown faces).
    ``runner_up``: the closest other identity, at ``runner_up_distance`` (None, inf when the
    gallery holds one person)."""

    identity: str | None
    distance: float
    confidence: float
    nearest: str | None = None
    threshold: float | None = None
    runner_up: str | None = None
    runner_up_distance: float = float("inf")


class GalleryMatcher(GalleryReader):
    """An open gallery's matching: ``load`` it, then ``match`` faces against it."""

    # -- matching ---------------------------------------------------------------------------

    def load(self) -> list[str]:
        """Read every enrolled vector and threshold now, in one read of the file (whatever is
        written to it later, ``match`` then uses these); the names of the people enrolled.
        GalleryError when the file cannot be read."""
        return self._loaded()[2]

    def damage(self) -> list[str]:
        """What SQLite's quick check finds damaged in the file (an index, a page that the
        reads of ``load`` do not touch), [] when nothing; GalleryError when it cannot run."""
        found = [" ".join(str(row[0]).split()) for row in self._read("PRAGMA quick_check(5)")]
        return [] if found == ["ok"] else found

    def with_own_threshold(self) -> int:
        """How many people have a threshold of their own, in the state ``load`` read (no
        second read: a writer may hold the file by now)."""
        return int(np.isfinite(self._loaded()[4]).sum())

    def _loaded(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
        """(vectors (M, D), owner index (M,), names, thresholds per name, each name's own
        threshold or NaN), cached."""
        if self._matrix is None:
            with self._snapshot():  # the two reads see one state of the file
                vectors, owners, _, _ = self.embeddings()
                own = {i.name: i.threshold for i in self.identities()}
            names = sorted(set(owners))
            index = {name: k for k, name in enumerate(names)}
            default = self.threshold if self.threshold_override is None else self.threshold_override
            thresholds = np.array(
                [default if own.get(n) is None else own[n] for n in names], np.float64
            )
            self._check_thresholds(names, thresholds)
            owner = np.array([index[n] for n in owners], np.int64)
            theirs = np.array([np.nan if own.get(n) is None else own[n] for n in names])
            self._matrix = (np.ascontiguousarray(vectors), owner, names, thresholds, theirs)
        return self._matrix

    def _check_thresholds(self, names: list[str], thresholds: np.ndarray) -> None:
        """GalleryError for a threshold no command would have stored (an import by an older
        facewatch took an export's as it was): infinite, everyone would match."""
        for name, value in zip(names, thresholds, strict=True):
            try:
                check_threshold(float(value), f"{name}'s threshold")
            except GalleryError as exc:
                raise GalleryError(
                    f"{self.path}: {exc}: set it again (facewatch gallery threshold "
                    f"{name!r} VALUE, or --default VALUE)"
                ) from None

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: its reads see one state of the file, whoever writes."""
        try:
            self._conn.execute("BEGIN")
        except sqlite3.DatabaseError as exc:
            raise translate(self.path, exc) from None
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("COMMIT")

    def match(
        self,
        embeddings: np.ndarray,
        runner_up: bool = False,
        defaults: Sequence[float | None] | None = None,
    ) -> list[Match]:
        """The identity (or unknown) of each of ``embeddings`` (N, D), nearest neighbour;
        with ``runner_up`` (identify shows it), also the closest other identity: a second
        pass over the gallery that the daemon's matching does not make. ``defaults``: per
        face, a threshold in place of the default (a camera's own; None: the default), which
        a person's own threshold overrides only where it is stricter."""
        queries = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.embedding_size)
        if len(queries) == 0:
            return []
        vectors, owner, names, thresholds, theirs = self._loaded()
        if len(vectors) == 0:
            return [Match(None, float("inf"), 0.0) for _ in queries]
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        similarity = queries @ vectors.T  # (N, M): the one matrix product
        rows = np.arange(len(queries))
        best = np.argmax(similarity, axis=1)
        distances = np.maximum(2.0 - 2.0 * similarity[rows, best], 0.0)
        seconds: list[tuple[str | None, float]] = [(None, float("inf"))] * len(queries)
        if runner_up:
            seconds = _runners_up(similarity, best, owner, names)
        results = []
        instead = [None] * len(queries) if defaults is None else defaults
        for row, dist, second, default in zip(best, distances, seconds, instead, strict=True):
            who = int(owner[row])
            limit = float(thresholds[who])
            if default is not None:  # a person's own (NaN: none) holds only where stricter
                limit = float(np.fmin(theirs[who], default))
            results.append(_judged(names[who], dist, limit, second))
        return results


def _runners_up(
    similarity: np.ndarray, best: np.ndarray, owner: np.ndarray, names: list[str]
) -> list[tuple[str | None, float]]:
    """For each face (a row of ``similarity`` (N, M), ``best`` its nearest column), the
    closest identity other than the nearest one's and its distance; (None, inf) when the
    gallery holds no one else."""
    rows = np.arange(len(similarity))
    others = np.where(owner[None, :] == owner[best][:, None], -np.inf, similarity)
    second = np.argmax(others, axis=1)  # the nearest face of anyone else
    second_distances = np.maximum(2.0 - 2.0 * others[rows, second], 0.0)
    return [
        (names[int(owner[j])] if np.isfinite(d) else None, float(d))
        for j, d in zip(second, second_distances, strict=True)
    ]


def _judged(name: str, dist: float, limit: float, second: tuple[str | None, float]) -> Match:
    """The answer for a face at (squared) distance ``dist`` of its nearest enrolled face,
    ``name``'s: named when closer than ``limit``; ``second``: the runner-up and its
    distance."""
    known = bool(dist < limit)
    confidence = float(np.clip(1.0 - dist / limit, 0.0, 1.0)) if known else 0.0
    other, other_distance = second
    return Match(
        name if known else None, float(dist), confidence, name, limit, other, other_distance
    )
