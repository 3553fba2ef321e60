"""engines.align: the margin crop and the 5-point similarity alignment."""

from __future__ import annotations

import numpy as np
import pytest

from engines.align import (
    align_similarity,
    crop_with_margin,
    margin_box,
    pick_main_face,
    reference_landmarks,
    similarity_matrix,
)


def test_margin_box_as_align_dataset_mtcnn() -> None:
    # box grown by margin/2 on each side, clipped to the image, truncated to integers
    assert margin_box([10.7, 20.2, 50.9, 70.5], (100, 60), margin=32).tolist() == [0, 4, 60, 86]
    assert margin_box([30.0, 30.0, 40.0, 40.0], (100, 100), margin=10).tolist() == [25, 25, 45, 45]


def test_crop_with_margin_takes_the_grown_box() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[25:45, 25:45] = 200  # exactly the grown box of (30, 30, 40, 40) with margin 10
    crop = crop_with_margin(image, [30, 30, 40, 40], margin=10, image_size=40)
    assert crop.shape == (40, 40, 3) and crop.min() == 200
    with pytest.raises(ValueError, match="outside"):
        crop_with_margin(image, [200, 200, 220, 220], margin=0)


def test_similarity_matrix_recovers_a_known_transform() -> None:
    src = reference_landmarks(160).astype(np.float64)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    matrix = similarity_matrix(src, dst)
    assert np.allclose(matrix[:, :2], scale * rot) and np.allclose(matrix[:, 2], shift)


def test_align_similarity_puts_landmarks_on_the_template() -> None:
    template = reference_landmarks(112)
    # a photo in which the face is twice as large and shifted: landmarks = 2 * template + 30
    landmarks = template * 2 + 30
    image = np.zeros((320, 320, 3), np.uint8)
    x, y = np.round(landmarks[0]).astype(int)
    image[y - 3 : y + 4, x - 3 : x + 4] = 255  # a bright spot on the left eye
    aligned = align_similarity(image, landmarks, image_size=112)
    spot = np.argwhere(aligned[..., 0] > 128).mean(axis=0)  # (row, col)
    assert np.allclose(spot[::-1], template[0], atol=1.0)


def test_main_face_is_large_and_central() -> None:
    boxes = np.array([[0, 0, 60, 60], [70, 70, 130, 130], [150, 150, 160, 160]], np.float32)
    assert pick_main_face(boxes, (200, 200)) == 1


def test_a_crop_is_rounded_and_a_box_just_past_the_edge_is_refused_as_outside() -> None:
    """The margin crop's bilinear values are rounded to the nearest level, as the crops cut
    on a GPU are (0.75 is 1, not 0: truncated, every crop came out darker); a box whose
    grown window is just past the image's right edge (no column left) is refused as outside,
    not handed to the resize (an OpenCV error)."""
    image = np.array([[0, 1], [0, 1]], np.uint8)
    crop = crop_with_margin(image, [0, 0, 2, 2], margin=0, image_size=4)
    assert crop.tolist() == [[0, 0, 1, 1]] * 4  # (0, 0.25, 0.75, 1 across)
    with pytest.raises(ValueError, match="outside"):
        crop_with_margin(np.zeros((50, 100, 3), np.uint8), [116, 10, 140, 40], margin=32)


def test_the_reference_template_scales_with_the_crop_and_a_model_may_use_its_edge() -> None:
    """The five reference points sit at the same place of any crop size (at 224 px, twice
    where they are at 112); a model's own template may put a point on its input's edge."""
    from engines.align import template_of

    assert np.allclose(reference_landmarks(224), 2 * reference_landmarks(112))
    assert np.allclose(reference_landmarks(160)[0], [54.71, 73.85], atol=0.01)
    edge = [[0, 0], [160, 0], [80, 80], [0, 160], [160, 160]]
    assert template_of({"landmarks": edge}, 160).tolist() == edge


def test_a_mirrored_face_is_not_aligned_mirrored_and_its_fit_is_the_closest() -> None:
    """Landmarks whose left and right come swapped (a mirror, or the detector's mistake):
    the alignment is a rotation, never a reflection (the crop is never flipped), scaled for
    the least squared distance to the template; landmarks all at one point are refused."""
    template = reference_landmarks(160).astype(np.float64)
    mirrored = template * np.array([-1.0, 1.0]) + np.array([300.0, 40.0])
    matrix = similarity_matrix(mirrored, template)
    assert np.linalg.det(matrix[:, :2]) > 0

    def misfit(scale: float) -> float:
        moved = mirrored @ (scale * matrix[:, :2]).T
        return float(((moved + (template - moved).mean(axis=0) - template) ** 2).sum())

    assert misfit(1.0) < min(misfit(0.99), misfit(1.01))
    with pytest.raises(ValueError, match="all at one point"):
        similarity_matrix(np.full((5, 2), 7.0), template)


def test_what_an_aligned_face_shows_beyond_the_frame_is_black() -> None:
    """A face at the frame's edge: the part of the crop that lies beyond the frame is
    black, as in the crops the model was trained on, not the edge's pixels smeared."""
    template = reference_landmarks(160)
    image = np.full((200, 200, 3), 200, np.uint8)
    aligned = align_similarity(image, template - np.array([60.0, 0.0]), image_size=160)
    assert aligned[:, :50].max() == 0 and aligned[:, 70:].min() == 200
