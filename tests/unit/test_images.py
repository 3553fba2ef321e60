"""Image loading and conversion: every odd file a user may hand us."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.images import ImageError, as_bgr8, read_image


@pytest.fixture
def photo(shared_data: Path) -> np.ndarray:
    return cv2.imread(str(shared_data / "images" / "obama-240p.jpg"))


def test_grayscale_becomes_three_equal_channels(photo, tmp_path):
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), gray)
    image = read_image(str(path))
    assert image.shape == (*gray.shape, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], gray) and np.array_equal(image[..., 2], gray)


def test_rgba_png_drops_alpha(shared_data):
    raw = cv2.imread(str(shared_data / "images" / "32bit.png"), cv2.IMREAD_UNCHANGED)
    assert raw.shape[2] == 4  # the shared file really is RGBA
    image = read_image(str(shared_data / "images" / "32bit.png"))
    assert image.shape == (*raw.shape[:2], 3)
    assert np.array_equal(image, raw[..., :3])


def test_16_bit_png_is_scaled_to_8_bit(photo, tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), photo.astype(np.uint16) * 257)
    image = read_image(str(path))
    assert image.dtype == np.uint8
    assert np.array_equal(image, photo)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not a readable image"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        read_image(str(path))
    assert str(path) in str(info.value)


def test_truncated_jpeg_is_refused(shared_data, tmp_path):
    data = (shared_data / "images" / "obama.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as info:
        read_image(str(path))
    assert "cut.jpg" in str(info.value)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"missing\.jpg"):
        read_image(str(tmp_path / "missing.jpg"))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
    ],
)
def test_as_bgr8_rejects_unusable_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        as_bgr8(array)
