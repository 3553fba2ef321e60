"""A face track (``Track``): where its face was and where it should be now (its velocity),
its identity votes and their verdict, and the track as it was before a face that may be
someone else's (``_Doubt``); an event of a track (``TrackEvent``); and a face of a frame
with its track, on its way through the pipeline (``TrackedFace``). The tracker that starts,
matches and ends them, and decides their events, is ``daemon.tracking``'s."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from daemon.camera_frames import Frame
    from engines.mtcnn import FrameDetections

UNKNOWN = ""  # the vote of a face that matched nobody
# a track's velocity: this weight for the latest move (one jittery box moves it half-way),
# at most MAX_SPEED face widths a second (a face that ran that fast is lost anyway), learnt
# only from moves where the box kept its size within STEADY_SIZE (a face half hidden by a
# passer, or a jittery box, shrinks and shifts while the person stands still), zero after a
# move back of over TURNED_BACK face widths (a lean that stopped and came back: its speed
# carried a young track onto a hidden neighbour's face; a jittery box's smaller wobble back,
# while the face walks on, does not count), used only after STEADY_MOVES moves in a row,
# and followed for at most MAX_PREDICT_S and MAX_PREDICT_WIDTHS face widths of a hidden face
# (then it waits where it got to; the track's last box is tried too)
VELOCITY_WEIGHT = 0.5
MAX_SPEED = 4.0
STEADY_SIZE = 1.2
TURNED_BACK = 0.1
STEADY_MOVES = 3
MAX_PREDICT_S = 1.0
MAX_PREDICT_WIDTHS = 1.0


@dataclass
class Vote:
    identity: str  # UNKNOWN for no match
    distance: float
    embedding: np.ndarray | None = None  # the face's, to match it again when the gallery changes


@dataclass(frozen=True)
class _Before:
    """A track before a frame whose face may not be its person's, and that frame's times."""

    bbox_xyxy: np.ndarray
    landmarks: np.ndarray
    last_seen: float
    last_frame_wall: float | None
    hits: int
    velocity_xy: np.ndarray
    moves: int
    ts: float
    wall_ts: float | None


@dataclass(frozen=True)
class _Doubt:
    """A track that came back after a gap, until its face says whose it is.

    ``look_ts``: the frame whose face of the track is judged when embedded (None: the
    track's next face, the second look at a face that came back as someone else's).
    ``far``: the first look was someone else's; ``held``: its vote, cast for whoever the
    second look finds it was."""

    before: _Before
    look_ts: float | None
    far: bool = False
    held: Vote | None = None


@dataclass
class Track:
    track_id: int
    bbox_xyxy: np.ndarray
    landmarks: np.ndarray
    first_seen: float
    last_seen: float
    hits: int = 1
    confirmed: bool = False
    identity: str | None = None  # announced identity (None: unknown or not yet resolved)
    judged: bool = False  # ``identity`` is a vote's verdict (not "not yet resolved")
    resolved: bool = False  # a vote has reached min_votes
    since_embed: int = 0  # processed frames since the face was last embedded
    embedded: bool = False
    votes: deque[Vote] = field(default_factory=deque)
    announced: set[str] = field(default_factory=set)  # every identity its events have named
    # first_seen / last_seen are on the tracker's clock (monotonic in the daemon); these, when
    # given, are the wall-clock times of the first frame (first_seen_ts) and the latest one
    first_seen_wall: float | None = None
    last_frame_wall: float | None = None
    velocity_xy: np.ndarray = field(default_factory=lambda: np.zeros(2))  # the box's, px/s
    moves: int = 0  # steady moves in a row that made ``velocity_xy`` (none: it is zero)
    # set when the latest face could be someone else's (the track came back after a gap):
    # the track as it was before, until the face is embedded and compared
    doubt: _Doubt | None = None

    def predicted(self, ts: float) -> np.ndarray:
        """Where the track's face should be at ``ts``: its last box moved at its velocity,
        at most ``MAX_PREDICT_S`` and one face width (``MAX_PREDICT_WIDTHS``) along, once
        it moved steadily (``STEADY_MOVES``; before, where it was last seen)."""
        if self.moves < STEADY_MOVES:
            return self.bbox_xyxy
        shift = self.velocity_xy * min(max(ts - self.last_seen, 0.0), MAX_PREDICT_S)
        most = MAX_PREDICT_WIDTHS * float(self.bbox_xyxy[2] - self.bbox_xyxy[0])
        length = float(np.hypot(*shift))
        if length > most:
            shift = shift * (most / length)
        return self.bbox_xyxy + np.tile(shift, 2)

    def follow(self, box: np.ndarray, ts: float) -> None:
        """The velocity, after its face was found at ``box`` at ``ts`` (unchanged when the
        box changed size: a face half hidden, or a jittery box, did not move that way; zero
        when the face turned back)."""
        elapsed = ts - self.last_seen
        width, before = float(box[2] - box[0]), float(self.bbox_xyxy[2] - self.bbox_xyxy[0])
        if elapsed <= 0 or not 1 / STEADY_SIZE <= width / max(before, 1e-9) <= STEADY_SIZE:
            return
        step = ((box[:2] + box[2:]) - (self.bbox_xyxy[:2] + self.bbox_xyxy[2:])) / 2 / elapsed
        most = MAX_SPEED * float(box[2] - box[0])
        speed = float(np.hypot(*step))
        if speed > most:
            step = step * (most / speed)
        if self.moves:
            heading = self.velocity_xy / max(float(np.hypot(*self.velocity_xy)), 1e-9)
            if -float(step @ heading) * elapsed > TURNED_BACK * width:
                self.velocity_xy, self.moves = np.zeros(2), 0
                return
        weight = VELOCITY_WEIGHT if self.moves else 1.0  # (a first move: its own)
        self.velocity_xy = self.velocity_xy + weight * (step - self.velocity_xy)
        self.moves += 1

    @property
    def first_seen_ts(self) -> float:
        """Wall-clock time of the track's first frame, for events and the archive."""
        return self.first_seen if self.first_seen_wall is None else self.first_seen_wall

    @property
    def last_seen_ts(self) -> float:
        """Wall-clock time of the track's latest frame, on the clock of its first (for its
        ``left``, and the archive: the visit's length)."""
        return self.wall_ts(self.last_seen)

    @property
    def last_frame_ts(self) -> float:
        """The wall clock's time of the track's latest frame as it said then (for an event
        of that frame, as the events of a frame carry)."""
        return self.last_seen_ts if self.last_frame_wall is None else self.last_frame_wall

    def wall_ts(self, ts: float) -> float:
        """The wall-clock time of the track's frame taken at ``ts`` (the tracker's clock):
        its first frame's, plus the time since on the tracker's clock. A step of the wall
        clock during the visit (NTP at boot) does not go into its times: a visit that
        lasted 4 s does not show -3596 s, or 3 days."""
        return self.first_seen_ts + (ts - self.first_seen)

    def verdict(
        self, min_votes: int, switch_margin: int = 1, unknown_votes: int | None = None
    ) -> tuple[str | None, float, float | None] | None:
        """(identity, confidence, mean distance) of the vote, or None while undecided.

        The first verdict needs a majority of the votes so far (a tie decides nothing):
        ``min_votes`` of them for a name, ``unknown_votes`` (default: as many) for unknown,
        so a stranger is not named from two near-threshold frames, nor a known face seen
        turned away at first announced unknown. After it, an announced identity that still
        has votes holds until another one outnumbers it by ``switch_margin`` (at most a
        third of the votes, so that a short window can change), and ``min_votes`` decides."""
        if not self.votes:
            return None
        counts = Counter(v.identity for v in self.votes)
        winner, n = counts.most_common(1)[0]
        if not self.judged:
            needed = min_votes if winner != UNKNOWN or unknown_votes is None else unknown_votes
            if 2 * n <= len(self.votes) or n < needed:
                return None
            return (winner or None, *self.support(winner))
        held = counts.get(self.identity or UNKNOWN, 0)
        if held and n - held < min(switch_margin, -(-len(self.votes) // 3)):
            winner, n = self.identity or UNKNOWN, held
        if n < min_votes:
            return None
        return (winner or None, *self.support(winner))

    def support(self, identity: str) -> tuple[float, float | None]:
        """The share of the votes for ``identity`` (UNKNOWN: unknown), and their mean
        distance (None without a finite one)."""
        distances = [v.distance for v in self.votes if v.identity == identity]
        finite = [d for d in distances if np.isfinite(d)]
        share = len(distances) / len(self.votes) if self.votes else 0.0
        return share, (float(np.mean(finite)) if finite else None)


@dataclass(frozen=True)
class TrackEvent:
    kind: str
    track: Track
    identity: str | None
    confidence: float
    distance: float | None
    previous: str | None = None
    # left, and a confirmed sent as its track leaves: "lost", "cut" or "stopped"; "gallery"
    reason: str | None = None


@dataclass
class TrackedFace:
    """A face of a frame of the batch, and its track (``daemon.scheduler.Pipeline``)."""

    frame: Frame
    detections: FrameDetections
    index: int
    track: Track

    def own(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The face's box, landmarks and score in its own frame (the track holds those of
        its latest frame, a later one when a batch has several frames of the camera)."""
        found, k = self.detections, self.index
        return found.bbox_xyxy[k], found.landmarks[k], float(found.score[k])


def _looks_at(doubt: _Doubt, ts: float) -> bool:
    """Whether the track's face of the frame taken at ``ts`` is the one ``doubt`` judges: that
    of its frame, or for a second look, any later one."""
    return doubt.look_ts == ts if doubt.look_ts is not None else ts > doubt.before.ts


def _restore(track: Track, before: _Before) -> None:
    """``track`` as it was before the face in doubt (that face was someone else's)."""
    track.bbox_xyxy, track.landmarks = before.bbox_xyxy, before.landmarks
    track.last_seen, track.last_frame_wall = before.last_seen, before.last_frame_wall
    track.hits, track.velocity_xy, track.moves = before.hits, before.velocity_xy, before.moves
