"""Per-camera face tracks: association by where each track's face is predicted to be
(``daemon.track_matching``), a look at a face that came back after a gap, an identity vote
over each track, and the decisions of when an event is due.

A track that came back after a gap (missing in the camera's frame before) has its face
embedded at once. When that face and the next are both someone else's, the track ends
(``left``, last seen where it was last seen) and those faces start a new track, with its
own ``confirmed`` and ``first_seen``. Someone else's: the gallery names another enrolled
person than the track's announced name, or (strangers) the face lies beyond ``FAR_TIMES``
the gallery's threshold from every face the track kept. A stranger whose face lies nearer
goes on as the track's person (most do, at video quality), and is renamed by the vote.

Events (``TrackEvent.kind``):
- ``confirmed``: a face has been seen in ``confirm_frames`` frames and, when it is
  recognised, its vote is in (identity null: nobody matched, or recognition is off); a face
  still undecided is announced, identity null, once seen in ``vote_window`` frames, or as it
  leaves;
- ``identified``: a confirmed track's identity is resolved (null -> name);
- ``changed``: a resolved identity becomes another one, or unknown;
  (``identified`` and ``changed`` have reason ``gallery`` when the gallery changed, not the face)
- ``left``: a confirmed track has not been seen for ``lost_after_s`` (reason ``lost``), its
  camera's picture cut to another scene (reason ``cut``), or the daemon stops while it is
  open (reason ``stopped``).

A track's first identity needs a majority of its recognitions ("unknown" votes included):
``min_votes`` of them for a name, ``unknown_votes`` for unknown (a known face seen turned
away at first is not announced a stranger, then named). Later it is the plurality of the
last ``vote_window`` recognitions, and an announced one holds until another identity
outnumbers it by ``switch_margin`` votes (a face near the threshold would otherwise flip
between a name and unknown at each recognition). Its confidence is the share of the window
that agrees. A face too small to recognise casts no vote (the scheduler does not match it:
``recognition.min_face_px``): the track keeps the votes it has. Nor does a face turned to a
profile (``max_turn``) once the track has a verdict: the model matches nobody to a profile,
which is no evidence of someone else, so it cannot change the name. Before the first verdict
it votes as any other face (a stranger who crosses the view side-on is announced while in
view, after ``unknown_votes`` recognitions, not as he leaves).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from daemon.config_pipeline import TrackingConfig
from daemon.gallery_match import Match
from daemon.track_matching import match_faces
from daemon.tracks import UNKNOWN, Track, TrackEvent, Vote, _Before, _Doubt, _looks_at, _restore
from engines.mtcnn import FrameDetections

logger = logging.getLogger(__name__)

# a stranger's face that came back after a gap is someone else only when it and the track's
# next face are both farther than this many times the gallery's threshold from the faces
# the track kept, at least MIN_KEPT of them (one person's faces lie beyond the threshold
# itself from their own track's, now and then: 5 % of them in a crowd; and one kept face, a
# poor one, says too little of its person)
FAR_TIMES = 1.5
MIN_KEPT = 2


def squared_distances(embedding: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The gallery's distance (squared L2 of the unit vectors) from ``embedding`` to each
    of ``others`` (N, D)."""
    unit = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
    norms = np.maximum(np.linalg.norm(others, axis=1, keepdims=True), 1e-12)
    distances: np.ndarray = np.maximum(2.0 - 2.0 * (others / norms) @ unit, 0.0)
    return distances


# the gallery's matching (Gallery.match): (N, D) embeddings -> the Match of each
Rematch = Callable[[np.ndarray], list[Match]]


class Tracker:
    """The tracks of one camera. Owned by the scheduler thread (not thread-safe)."""

    def __init__(
        self,
        camera: str,
        config: TrackingConfig,
        reembed_every: int = 10,
        recognising: bool = True,
    ) -> None:
        """``recognising``: its faces are matched (a FaceNet model is loaded), so a track
        waits for its vote before it is announced."""
        self.camera, self.config, self.reembed_every = camera, config, reembed_every
        self.recognising = recognising
        self.tracks: list[Track] = []
        self._next_id = 1
        self._previous_ts = -np.inf  # the time of the frame before (a track missing there
        # and found again is looked at)

    def update(
        self, ts: float, faces: FrameDetections, wall_ts: float | None = None
    ) -> list[Track]:
        """Match ``faces`` of a frame taken at ``ts`` to tracks (greedy by IoU with each
        track's predicted box or its last one, whichever overlaps more, then by the nearest
        centre of either), start tracks for the rest; returns the track of each face, in
        order. ``wall_ts``: the frame's wall-clock time, when ``ts`` is on another clock (the
        daemon's monotonic one); a track's later times follow its first frame's
        (``Track.wall_ts``). Every track is a candidate, however old: ``expire`` ends those
        gone first (the Pipeline does before each frame)."""
        assigned: list[Track | None] = [None] * len(faces)
        live = [t for t in self.tracks if t.last_seen < ts]
        if live and len(faces):
            assigned = match_faces(faces.bbox_xyxy, live, ts, self.config)
        result = []
        for i, track in enumerate(assigned):
            box = faces.bbox_xyxy[i]
            if track is None:
                track = Track(self._next_id, box, faces.landmarks[i], ts, ts)
                track.first_seen_wall = track.last_frame_wall = wall_ts
                self._next_id += 1
                self.tracks.append(track)
            else:
                self._look_at(track, ts, wall_ts)
                track.follow(box, ts)
                track.bbox_xyxy, track.landmarks = box, faces.landmarks[i]
                track.last_seen, track.last_frame_wall = ts, wall_ts
                track.hits += 1
                track.since_embed += 1
            result.append(track)
        self._previous_ts = max(ts, self._previous_ts)
        return result

    def _look_at(self, track: Track, ts: float, wall_ts: float | None) -> None:
        """Sets ``track.doubt`` when the face just given to it may be someone else's: the
        track was missing in the camera's previous frame (someone may have taken the place).
        Only a recognising tracker can tell."""
        if not self.recognising:
            return
        if track.doubt is not None:
            if track.doubt.look_ts is None:  # a second look at a face that came back far
                track.doubt = replace(track.doubt, look_ts=ts)
            return
        if track.last_seen >= self._previous_ts:
            return
        before = _Before(
            track.bbox_xyxy, track.landmarks, track.last_seen, track.last_frame_wall,
            track.hits, track.velocity_xy, track.moves, ts, wall_ts,
        )  # fmt: skip
        track.doubt = _Doubt(before, ts)

    def wants_embedding(self, track: Track) -> bool:
        """New tracks, undecided ones (no identity, known or unknown, has ``min_votes``
        yet), those whose latest recognition named someone else than they announced (another
        person may have taken the place: looked at again at once, not ``reembed_every``
        frames later; a face turned away, unknown, is no such hurry), those whose face may be
        someone else's (``Track.doubt``: compared at once, ``replaced``), and every
        ``reembed_every`` frames."""
        if not track.embedded or not track.resolved or track.doubt is not None:
            return True
        latest = track.votes[-1].identity if track.votes else UNKNOWN
        if latest not in (UNKNOWN, track.identity or UNKNOWN):
            return True
        return track.since_embed >= self.reembed_every

    def replaced(
        self,
        track: Track,
        embedding: np.ndarray,
        named: str | None,
        ts: float,
        same_within: float | None,
    ) -> tuple[Track, list[TrackEvent]]:
        """The track of ``track``'s face of the frame taken at ``ts``, just embedded and
        matched by the gallery to ``named`` (None: nobody): ``track`` itself, unless it came
        back after a gap (``Track.doubt``) and that face and its next are both someone
        else's (``_someone_else``; ``same_within``: the gallery's threshold, None: no
        gallery, no judging). Then ``track`` ends where it was last seen (its events,
        ``left``) and the faces start a new track from the first one's frame."""
        doubt = track.doubt
        if doubt is None or not _looks_at(doubt, ts):
            return track, []  # (a face of another frame of the batch: not the one in doubt)
        if same_within is None or not self._someone_else(track, embedding, named, same_within):
            self._drop_doubt(track)
            return track, []
        if not doubt.far:
            track.doubt = replace(doubt, look_ts=None, far=True)
            return track, []
        track.doubt, before = None, doubt.before
        new = Track(self._next_id, track.bbox_xyxy, track.landmarks, before.ts, track.last_seen)
        new.first_seen_wall, new.last_frame_wall = before.wall_ts, track.last_frame_wall
        new.hits = track.hits - before.hits
        new.votes.extend([doubt.held] if doubt.held else [])
        self._next_id += 1
        _restore(track, before)
        self.tracks = [t for t in self.tracks if t is not track] + [new]
        logger.debug(
            "camera %s: track %d's face at %.2f is someone else's (%s): track %d",
            self.camera, track.track_id, before.ts, named or "a stranger", new.track_id,
        )  # fmt: skip
        return new, self._leaving(track, "lost")

    def _someone_else(
        self, track: Track, embedding: np.ndarray, named: str | None, same_within: float
    ) -> bool:
        """Whether a face of ``track`` is clearly not its person's: it lies farther than
        ``same_within`` from every face the track kept (at least ``MIN_KEPT``) and the
        gallery named another enrolled person than the track's announced name, or, for
        strangers, farther than ``FAR_TIMES`` ``same_within`` (the gallery's name for one
        face of someone it met as another, alone, is not enough: a stranger's face now and
        then lies within its threshold of an enrolled person)."""
        kept = [v.embedding for v in track.votes if v.embedding is not None]
        if len(kept) < MIN_KEPT:
            return False
        nearest = float(squared_distances(embedding, np.stack(kept)).min())
        other = bool(named and track.identity and named != track.identity)
        return nearest > (same_within if other else FAR_TIMES * same_within)

    def _drop_doubt(self, track: Track) -> None:
        """``track``'s face is its person's after all (or can no longer be judged): no
        doubt, and a held vote counts as the track's."""
        held = track.doubt.held if track.doubt is not None else None
        track.doubt = None
        if held is not None:
            track.votes.append(held)
            while len(track.votes) > self.config.vote_window:
                track.votes.popleft()

    def settle(self) -> None:
        """After a batch's faces were embedded: a doubt whose face was not (too small to
        recognise) is dropped, not judged on a later face and dated back to it."""
        for track in self.tracks:
            if track.doubt is not None and track.doubt.look_ts is not None:
                self._drop_doubt(track)

    def record(
        self,
        track: Track,
        identity: str | None,
        distance: float,
        embedding: np.ndarray | None = None,
    ) -> None:
        """One recognition of the track's face (identity None: matched nobody); its
        ``embedding`` is kept to match it again when the gallery changes. The vote of a face
        that came back far from the track's faces is held until the next one says whose it
        is (``replaced``)."""
        track.embedded, track.since_embed = True, 0
        vote = Vote(identity or UNKNOWN, distance, embedding)
        if track.doubt is not None and track.doubt.far and track.doubt.held is None:
            track.doubt = replace(track.doubt, held=vote)
            return
        track.votes.append(vote)
        while len(track.votes) > self.config.vote_window:
            track.votes.popleft()

    def decide(self, tracks: list[Track], reason: str | None = None) -> list[TrackEvent]:
        """Events due for the tracks just updated by a frame (``reason`` of identified and
        changed events: None, the face; "gallery")."""
        events = []
        config = self.config
        # at a gallery change every vote was just matched again: the new evidence decides
        # (a tie keeps the identity), not the margin against votes of the old gallery
        margin = 1 if reason == "gallery" else config.switch_margin
        # (a window too short for them: as many votes as it holds)
        min_votes = min(config.min_votes, config.vote_window)
        unknown_votes = min(config.unknown_votes, config.vote_window)
        open_now = {id(t) for t in self.tracks}
        # (not one that ended meanwhile: someone else's face came in a later frame of the batch)
        for track in [t for t in tracks if id(t) in open_now]:
            verdict = track.verdict(min_votes, margin, unknown_votes)
            if verdict is not None:
                track.resolved = True
            if not track.confirmed:
                # a recognised face is announced once its vote is in, "unknown" then meaning
                # nobody, not "not yet"; or, still undecided (too small to match, votes
                # split), once seen in vote_window frames
                decided = (
                    verdict is not None or not self.recognising or track.hits >= config.vote_window
                )
                if track.hits >= config.confirm_frames and decided:
                    track.confirmed = True
                    who, confidence, distance = verdict or (None, 0.0, None)
                    track.identity, track.judged = who, verdict is not None
                    track.announced.update([who] if who is not None else [])
                    events.append(TrackEvent("confirmed", track, who, confidence, distance))
                continue
            if verdict is None:
                continue
            if verdict[0] == track.identity:  # (an undecided track found unknown: no event)
                track.judged = True
                continue
            who, confidence, distance = verdict
            kind = "identified" if track.identity is None and who is not None else "changed"
            events.append(
                TrackEvent(kind, track, who, confidence, distance, track.identity, reason)
            )
            track.identity, track.judged = who, True
            track.announced.update([who] if who is not None else [])
        return events

    def recount(self, rematch: Rematch | None) -> list[TrackEvent]:
        """The gallery changed: each open track's recent faces are matched again against the
        new one (``rematch``; None: no gallery, nobody is known), so its identity follows at
        once, with a full window; the events of the announced tracks whose identity changes
        (reason "gallery"). A track without a kept face votes anew from its next frames; one
        whose face was in doubt is its person's (the doubt was judged by the old gallery)."""
        for track in self.tracks:
            self._drop_doubt(track)
            faces = [v.embedding for v in track.votes if v.embedding is not None]
            if rematch is None or not faces:
                again = [Match(None, float("inf"), 0.0)] * len(faces)
            else:
                again = rematch(np.stack(faces))
            track.votes = deque(
                Vote(match.identity or UNKNOWN, match.distance, face)
                for match, face in zip(again, faces, strict=True)
            )
            if not track.votes:
                track.resolved = track.embedded = False
        return self.decide([t for t in self.tracks if t.confirmed], reason="gallery")

    def rescale(self, scale_xy: tuple[float, float]) -> None:
        """The camera's frames changed size (it came back at another resolution): its tracks'
        boxes and landmarks in the new frames' pixels, so the faces continue them."""
        sx, sy = scale_xy
        for track in self.tracks:
            track.bbox_xyxy = (track.bbox_xyxy * np.array([sx, sy, sx, sy])).astype(np.float32)
            track.landmarks = (track.landmarks * np.array([sx, sy])).astype(np.float32)
            track.velocity_xy = track.velocity_xy * np.array([sx, sy])
            self._drop_doubt(track)  # (its boxes in the old frames' pixels)

    def in_view(self) -> list[str | None]:
        """The announced identity of each confirmed track still open (None: unknown)."""
        return [t.identity for t in self.tracks if t.confirmed]

    def cut(self) -> list[TrackEvent]:
        """The camera's picture cut to another scene (``daemon.scene_cuts``): every track
        ends, as one not seen for ``lost_after_s`` does (``left`` where it was last seen), with
        reason ``cut``; a face at the same place after the cut starts its own."""
        gone, self.tracks = self.tracks, []
        return [event for track in gone for event in self._leaving(track, "cut")]

    def expire(self, now: float, stopping: bool = False) -> list[TrackEvent]:
        """Drop tracks not seen for ``lost_after_s`` (every track when ``stopping``);
        ``left`` for the confirmed ones."""
        if stopping:
            gone = self.tracks
        else:
            gone = [t for t in self.tracks if now - t.last_seen > self.config.lost_after_s]
        if not gone:
            return []
        self.tracks = [t for t in self.tracks if t not in gone]
        reason = "stopped" if stopping else "lost"
        return [event for track in gone for event in self._leaving(track, reason)]

    def _leaving(self, track: Track, reason: str) -> list[TrackEvent]:
        """The events of a track that ends: ``left`` when it was announced."""
        self._drop_doubt(track)
        events = []
        if not track.confirmed and track.hits >= self.config.confirm_frames:
            # seen long enough, gone before its vote was in: announced as it leaves (with its
            # reason), undecided, so that the visit has its events (and its archive folder)
            track.confirmed = True
            events.append(TrackEvent("confirmed", track, None, 0.0, None, reason=reason))
        if track.confirmed:
            confidence, distance = (
                track.support(track.identity or UNKNOWN) if track.judged else (0.0, None)
            )
            events.append(
                TrackEvent("left", track, track.identity, confidence, distance, reason=reason)
            )
        return events
