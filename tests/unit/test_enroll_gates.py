"""daemon.face_quality's enrolment gates on hand-built detections: which face of a photo is
taken, and which photos are refused, at the limits the options and the docs give."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.face_quality import MAX_FACE_OUTSIDE, QualityGates, Rejected, face_at, largest_note
from engines.mtcnn import FrameDetections

# a face looking straight on: eyes, nose, mouth corners in an 80 x 90 px box
_FRONTAL = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float32)


def _faces(*boxes: tuple[float, float, float, float], score: float = 0.99,
           nose_dx: float = 0.0) -> FrameDetections:  # fmt: skip
    """Faces at ``boxes``, each with the frontal landmarks moved with its box (the nose
    ``nose_dx`` px off the middle of the eyes)."""
    marks = []
    for x1, y1, _, _ in boxes:
        face = _FRONTAL + np.array([x1 - 20, y1 - 20], np.float32)
        face[2, 0] += nose_dx
        marks.append(face)
    return FrameDetections(
        np.array(boxes, np.float32), np.full(len(boxes), score, np.float32), np.array(marks)
    )


def test_a_photo_of_several_faces_is_refused_and_largest_takes_the_largest_by_its_short_side() -> (
    None
):
    """Two faces: refused without --largest; with it, the face whose box's shorter side is
    longer (a tall narrow box is no larger face), and the note says when the next is nearly
    as large (within 15 %), which it is not at 70 %."""
    group = _faces((20, 20, 100, 110), (200, 20, 260, 200))  # 80 x 90, then 60 x 180
    with pytest.raises(Rejected, match="2 faces found, expected exactly one"):
        QualityGates().choose_face(group, (480, 640))
    assert QualityGates(largest=True).choose_face(group, (480, 640)) == 0
    assert "nearly as large" not in largest_note(group, 0)
    close = _faces((20, 20, 100, 110), (200, 20, 268, 200))  # (68 px: 85 % of 80)
    assert "the next is nearly as large (68 px against 80)" in largest_note(close, 0)


def test_the_enrolment_gates_hold_at_their_limits() -> None:
    """A face of exactly --min-face-px, scored exactly the detector's threshold, with exactly
    10 % of it beyond the photo's edge, or seen by the camera at exactly the score asked,
    is taken; a pixel, a point or a share less is refused."""
    photo = (480, 640)
    assert QualityGates(min_face_px=80).choose_face(_faces((20, 20, 100, 110)), photo) == 0
    with pytest.raises(Rejected, match="face too small: 80 px, the minimum is 81 px"):
        QualityGates(min_face_px=81).choose_face(_faces((20, 20, 100, 110)), photo)
    gates = QualityGates(min_score=0.9)
    assert gates.choose_face(_faces((20, 20, 100, 110), score=0.9), photo) == 0
    with pytest.raises(Rejected, match="the detector scores this face"):
        gates.choose_face(_faces((20, 20, 100, 110), score=0.89), photo)
    assert MAX_FACE_OUTSIDE == 0.1
    edge = _faces((-8, 20, 72, 110))  # 8 of its 80 px beyond the left edge: 10 %
    assert QualityGates().choose_face(edge, photo) == 0
    with pytest.raises(Rejected, match="face cut off by the photo's edge"):
        QualityGates().choose_face(_faces((-9, 20, 71, 110)), photo)
    QualityGates(min_seen_score=0.95).check_seen_score(0.95)
    with pytest.raises(Rejected, match=r"the camera's detector scored this face 0\.949"):
        QualityGates(min_seen_score=0.95).check_seen_score(0.9499)


@pytest.mark.parametrize("side", [-1, 1])
def test_a_profile_is_refused_turned_either_way(side) -> None:
    """A face turned to either side (its nose 1.6 half eye distances off the middle: 32 px
    with eyes 40 px apart) is refused; 1.4 is taken."""
    photo = (480, 640)
    with pytest.raises(Rejected, match="face turned to the side"):
        QualityGates().choose_face(_faces((20, 20, 100, 110), nose_dx=side * 32), photo)
    assert QualityGates().choose_face(_faces((20, 20, 100, 110), nose_dx=side * 28), photo) == 0


def test_a_face_archive_images_face_is_the_one_found_where_its_visit_says() -> None:
    """The face found again overlapping where visit.json places it by IoU 0.5 or more is
    taken, whatever else the image shows; one further off is not that face."""
    found = _faces((20, 20, 100, 110), (200, 20, 280, 110))
    assert face_at(found, np.array([200, 20, 280, 110])) == 1
    assert face_at(found, np.array([220, 20, 300, 110])) == 1  # (IoU 0.6)
    assert face_at(found, np.array([240, 20, 320, 110])) is None  # (IoU 0.33)
