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
