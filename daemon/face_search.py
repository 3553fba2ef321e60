"""Where the pipeline looks for faces (``daemon.scheduler.Pipeline``), camera by camera: the
motion gate (which frames are searched), the full scans and the searches around the tracks
(``detection.full_scan_every``), one detector call per group of cameras, and what is kept of
what it found (``detection.ignore``; a face that never leaves, ``daemon.still_faces``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from daemon import metrics
from daemon.camera_frames import Frame
from daemon.camera_open import source_kind
from daemon.config import Config
from daemon.cut_hold import Step
from daemon.frame_admission import FrameAdmission
from daemon.still_faces import STILL_FACE_S, StillFaces
from daemon.tracking import Tracker
from daemon.tracks import Track
from engines.boxes import iou_matrix, points_in_polygon
from engines.mtcnn import MTCNN, FrameDetections

# the pipeline's log lines, as they were before it was split (the log shows the name)
logger = logging.getLogger("daemon.scheduler")


def camera_detectors(config: Config, detector: MTCNN) -> dict[str, MTCNN]:
    """Each camera's detector: ``detector``, or one sharing its engines with the camera's own
    ``detection.min_face_size``."""
    detectors: dict[str, MTCNN] = {}
    for camera in config.cameras:
        size = camera.detection.min_face_size
        detectors[camera.name] = (
            detector if size is None else detector.with_config(min_face_size=size)
        )
    return detectors


class FaceSearch:
    """Each camera's searches for faces. Owned by the scheduler thread."""

    def __init__(
        self,
        config: Config,
        detectors: Mapping[str, MTCNN],
        trackers: Mapping[str, Tracker],
        admission: FrameAdmission,
    ) -> None:
        """``detectors``: each camera's (``camera_detectors``); ``trackers``: each camera's
        tracks, searched around; ``admission``: whether a frame's size changed."""
        self.config, self._detectors, self.trackers = config, detectors, trackers
        self._admission = admission
        self._ignore = {
            c.name: [np.asarray(region, np.float64) for region in c.detection.ignore]
            for c in config.cameras
            if c.detection.ignore
        }
        self._motion = {c.name: config.motion(c) for c in config.cameras}
        # (not a video file's: a loop finds its faces at the same places, again and again)
        self._still = {c.name: StillFaces() for c in config.cameras if source_kind(c.url) != "file"}
        self._last_search: dict[str, float] = {}  # camera -> ts of its last frame searched
        self._last_face: dict[str, float] = {}  # camera -> ts of its last frame with a track
        self._moving_for: dict[str, int] = {}  # camera -> its latest frames that moved, in a row
        # cameras take their full scans in different batches (a full scan costs several
        # local ones): camera k's first full scan is its (k mod N)+1-th frame
        every = config.detection.full_scan_every
        self._since_full_scan = {
            c.name: every - 1 - k % every for k, c in enumerate(config.cameras)
        }

    def worth_a_search(self, step: Step) -> bool:
        """The motion gate: a frame where nothing moved, of a camera that has seen no face
        for ``check_every_s`` (a face still in the room, missed a moment, e.g. looking
        down, is looked for again), is not searched (and counted), unless its camera's last
        search is ``check_every_s`` old (or the clock went back): then the whole frame is
        searched, whatever ``full_scan_every`` says (there is no face to search around).
        At a camera that tracks no one, the first ``full_scan_every`` frames that moved after
        a still one are searched whole (``step.whole``): someone may have come in, and there
        is nothing to search around; while the view moves on (a street, trees in the wind),
        only at the full scans again. (Without a motion gate every frame "moved":
        full_scan_every is its only saving.)"""
        frame = step.frame
        camera, motion = frame.camera, self._motion[frame.camera]
        moving_for = self._moving_for[camera] = (
            self._moving_for.get(camera, 0) + 1 if frame.moved else 0
        )
        every = self.config.detection.full_scan_every
        step.whole = motion.enabled and not self.trackers[camera].tracks and 0 < moving_for <= every
        since = frame.clock - self._last_search.get(camera, -np.inf)
        if self.trackers[camera].tracks:
            self._last_face[camera] = frame.clock
        faces_seen = 0 <= frame.clock - self._last_face.get(camera, -np.inf) < motion.check_every_s
        still = motion.enabled and not frame.moved and not faces_seen
        if still and 0 <= since < motion.check_every_s:
            metrics.FRAMES_STILL.labels(camera).inc()
            return False
        if still:
            self._since_full_scan[camera] = self.config.detection.full_scan_every
        self._last_search[camera] = frame.clock
        return True

    def detect(self, frames: list[Frame], whole: set[int]) -> list[FrameDetections]:
        """One detector call per group of cameras sharing settings (usually one); the
        frames in ``whole`` (ids) are searched whole."""
        results: list[FrameDetections | None] = [None] * len(frames)
        groups: dict[int, list[int]] = {}
        for k, frame in enumerate(frames):
            groups.setdefault(id(self._detectors[frame.camera]), []).append(k)
        priors = [self.prior(frame, id(frame) in whole) for frame in frames]
        # a frame with no face to search around, between full scans: nothing to find, and
        # its image pyramid is not built for nothing
        searched = [prior is None or len(prior) > 0 for prior in priors]
        for members in groups.values():
            members = [k for k in members if searched[k]]
            if not members:
                continue
            detector = self._detectors[frames[members[0]].camera]
            images = [frames[k].image for k in members]
            found = detector.detect(images, priors=[priors[k] for k in members])
            for k, detections in zip(members, found, strict=True):
                results[k] = detections
        return [r if r is not None else FrameDetections() for r in results]

    def prior(self, frame: Frame, whole: bool = False) -> np.ndarray | None:
        """None: search the whole frame (every ``full_scan_every`` frames of a camera, a
        frame of another size than its tracks', a ``whole`` one: a scene cut's, which may
        be unlike the frame before, or someone's arrival, ``worth_a_search``); else the
        boxes of the camera's tracks, to search only around them (none: the frames of a
        camera with no tracks are not searched between full scans)."""
        camera = frame.camera
        resized = self._admission.resized(frame)
        tracks = self.trackers[camera].tracks
        every = self.config.detection.full_scan_every
        self._since_full_scan[camera] += 1
        if resized or whole or self._since_full_scan[camera] >= every:
            self._since_full_scan[camera] = 0
            return None
        return np.stack([t.bbox_xyxy for t in tracks]) if tracks else np.zeros((0, 4))

    def not_ignored(self, frame: Frame, found: FrameDetections) -> FrameDetections:
        """``found`` without the faces centred in the camera's ``detection.ignore`` regions
        (the centre of the part of the box inside the frame)."""
        regions = self._ignore.get(frame.camera)
        if not regions or not len(found):
            return found
        height, width = frame.image.shape[:2]
        visible = np.clip(found.bbox_xyxy, 0, (width, height, width, height))  # a face cut
        centres = (visible[:, :2] + visible[:, 2:]) / 2 / (width, height)  # off by the edge
        centres = np.clip(centres, 0, np.nextafter(1, 0))  # a region's far edge is in it
        dropped = np.zeros(len(found), bool)
        for region in regions:
            dropped |= points_in_polygon(centres, region)
        if not dropped.any():
            return found
        metrics.FACES_IGNORED.labels(frame.camera).inc(int(dropped.sum()))
        kept = ~dropped
        return FrameDetections(found.bbox_xyxy[kept], found.score[kept], found.landmarks[kept])

    def see_still(self, frame: Frame, found: FrameDetections, tracks: list[Track]) -> None:
        """Say a face that has stayed at one place for half an hour (``StillFaces``), with
        the ``detection.ignore`` region that drops faces there, the box and a margin."""
        still = self._still.get(frame.camera)
        if still is None:
            return
        for box in still.see(frame.clock, found.bbox_xyxy):
            height, width = frame.image.shape[:2]
            margin = 0.1 * (box[2:] - box[:2])  # (and outwards to the printed 0.01)
            x0, y0 = np.floor(np.clip((box[:2] - margin) / (width, height), 0, 1) * 100) / 100
            x1, y1 = np.ceil(np.clip((box[2:] + margin) / (width, height), 0, 1) * 100) / 100
            track = tracks[int(iou_matrix(box[None], found.bbox_xyxy).argmax())]
            logger.warning(
                "camera %s: a face has stayed at one place for %d min (box %d,%d to %d,%d of "
                "its %dx%d frame, named %s): a photo, a poster, a screen? To drop faces "
                "there, add to the camera's detection.ignore: [[%.2f, %.2f], [%.2f, %.2f], "
                "[%.2f, %.2f], [%.2f, %.2f]] (someone who sat that still: nothing to do)",
                frame.camera, STILL_FACE_S // 60, *box.round(), width, height,
                track.identity or "nobody", x0, y0, x1, y0, x1, y1, x0, y1,
            )  # fmt: skip
