"""The pipeline's side of scene cuts (``daemon.scene_cuts``, with
``tracking.end_at_scene_cuts``): each camera's frames go through its ``SceneCuts`` as they are
searched; a candidate cut is held, searched but not tracked, until its camera's next frame
says whether it is a cut, so that none of its faces joins a track from before the cut.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from daemon.camera_frames import Frame
from daemon.scene_cuts import WITHIN_S, SceneCuts
from engines.mtcnn import FrameDetections

# a candidate waits for a frame waiting in its camera's queue at most this long: such a frame
# may never decide it (one the engines refuse, of a size the TensorRT plan does not cover)
PENDING_MAX_S = 4 * WITHIN_S


@dataclass
class Step:
    """A frame on its way: searched, then tracked (a scene cut candidate's waits for its
    camera's next frame to say whether it is a cut)."""

    frame: Frame
    stalled_s: float  # (``FrameAdmission.arrived``)
    detections: FrameDetections = field(default_factory=FrameDetections)
    cut: bool | None = None  # None: a candidate cut, not decided yet
    whole: bool = False  # searched whole: someone may have come in (``FaceSearch.worth_a_search``)
    likeness: float = 1.0  # a cut's, to the frame before (daemon.scene_cuts.likeness)


class CutHold:
    """Every camera's scene cuts, and its candidate held until decided."""

    def __init__(self, cameras: Iterable[str], enabled: bool) -> None:
        self._scenes = {camera: SceneCuts() for camera in cameras} if enabled else {}
        self._waiting: dict[str, Step] = {}  # camera -> its cut candidate, undecided
        self._held: dict[str, Step] = {}  # camera -> that candidate, searched, not tracked

    def look(self, step: Step) -> bool:
        """``step``'s frame, in its camera's order: a candidate cut waits for its camera's
        next frame (``cut`` None), which decides it; any other frame is no cut. Whether the
        frame is searched whole: a candidate, and the frame that confirms one (a face after
        a cut is not near the tracks before it)."""
        scenes = self._scenes.get(step.frame.camera)
        if scenes is None:
            step.cut = False
            return False
        look = scenes.look(step.frame.image, step.frame.clock)
        waiting = self._waiting.pop(step.frame.camera, None)
        if waiting is not None and look.confirms is not None:
            waiting.cut = look.confirms
            if look.confirms:
                waiting.likeness = look.likeness
        if look.candidate:
            self._waiting[step.frame.camera] = step
        else:
            step.cut = False
        return look.candidate or bool(look.confirms)

    def hold(self, step: Step) -> None:
        """Keep ``step`` (a candidate, searched) until ``take`` or ``due`` gives it back."""
        self._held[step.frame.camera] = step

    def take(self) -> list[Step]:
        """The held candidates, to be tracked before the frames that decided them."""
        held, self._held = list(self._held.values()), {}
        return held

    def due(self, now: float, stopping: bool, pending: Collection[str] = ()) -> list[Step]:
        """The held candidates whose next frame will not come in time (none within
        ``WITHIN_S`` of them by ``now``, the frames' clock), every one when ``stopping``:
        no cut (a frame is never lost). A camera in ``pending`` has a frame waiting for the
        pipeline: that frame decides, however late the pipeline runs (up to
        ``PENDING_MAX_S``)."""
        due = [
            step
            for camera, step in self._held.items()
            if stopping
            or now - step.frame.clock > (PENDING_MAX_S if camera in pending else WITHIN_S)
        ]
        for step in due:
            camera = step.frame.camera
            del self._held[camera]
            if step.cut is None:
                step.cut = False
                self._waiting.pop(camera, None)
                self._scenes[camera].drop_candidate()
        return due

    def forget(self) -> None:
        """After a failure of the engines: the held frames are not tracked (their faces
        would need the engines)."""
        self._held.clear()
