"""Image loading and conversion: every odd file a user may hand us."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.facenet import FaceNet
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


@pytest.mark.parametrize("scale", [257, 16, 4, 1], ids=["16-bit", "12-bit", "10-bit", "0-255"])
def test_16_bit_png_is_scaled_to_8_bit(photo, tmp_path, scale):
    """Full-range 16-bit pixels, and 12- or 10-bit data or 0-255 values stored in 16 bits
    (which came out near black: no face found), all give the 8-bit photo."""
    assert photo.max() == 255
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), photo.astype(np.uint16) * scale)
    image = read_image(str(path))
    assert image.dtype == np.uint8
    assert np.array_equal(image, photo)


def test_12_bit_frames_with_an_opaque_16_bit_alpha_keep_their_brightness(photo):
    """A 12-bit BGRA frame handed to the Python API (MTCNN.detect) was scaled by its alpha
    of 65535, not its colours: near black (mean 7.5 against 127.6 without the alpha)."""
    deep = photo.astype(np.uint16) * 16
    alpha = np.full((*photo.shape[:2], 1), 65535, np.uint16)
    assert np.array_equal(as_bgr8(np.concatenate([deep, alpha], axis=2)), photo)


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with the EXIF segment a phone writes, holding only the Orientation tag."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08"  # big-endian TIFF header, first IFD at 8
    tiff += struct.pack(">HHHIHH", 1, 0x0112, 3, 1, orientation, 0) + bytes(4)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def _largest_face(detector, facenet: FaceNet, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest face's landmarks (5, 2) and embedding."""
    found = detector.detect([image])[0]
    assert len(found) > 0, "no face found"
    box = found.bbox_xyxy
    k = int(np.argmax((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])))
    return found.landmarks[k], facenet.embed_faces(image, found)[k]


@pytest.mark.parametrize(
    ("orientation", "stored"),
    [(6, cv2.ROTATE_90_COUNTERCLOCKWISE), (8, cv2.ROTATE_90_CLOCKWISE), (3, cv2.ROTATE_180)],
)
def test_a_phone_photo_is_read_upright_by_its_exif_orientation(
    shared_data, shipped_model, detector, tmp_path, orientation, stored
):
    """Phones store a portrait as landscape pixels plus an EXIF Orientation; every viewer
    shows it upright, and so must enroll, identify and detect (sideways, the face was not
    found, or enrolled as a face that matched strangers)."""
    upright_path = shared_data / "images" / "obama.jpg"
    upright = read_image(str(upright_path))
    ok, stored_jpeg = cv2.imencode(
        ".jpg", cv2.rotate(upright, stored), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    assert ok
    path = tmp_path / f"IMG_000{orientation}.jpg"
    path.write_bytes(_with_orientation(stored_jpeg.tobytes(), orientation))
    image = read_image(str(path))
    assert image.shape == upright.shape
    facenet = FaceNet.load(shipped_model, threads=2)
    landmarks, embedding = _largest_face(detector, facenet, image)
    eyes_y, mouth_y = landmarks[:2, 1].max(), landmarks[3:, 1].min()
    assert eyes_y < landmarks[2, 1] < mouth_y  # eyes above the nose above the mouth
    _, expected = _largest_face(detector, facenet, upright)
    assert float(embedding @ expected) >= 0.99


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


HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("IMG_0001.HEIC", HEIC_HEAD + bytes(5000), "HEIC/HEIF photos .* are not read: convert"),
        ("IMG_0002.jpg", HEIC_HEAD + bytes(5000), "HEIC/HEIF"),  # by content, whatever its name
        ("IMG_0003.heif", b"not even an ISO file", "HEIC/HEIF"),
        ("x.avif", b"\x00\x00\x00\x20ftypavif" + bytes(100), "AVIF photo not decoded"),
    ],
)
def test_heic_and_avif_photos_that_cannot_be_read_say_so_and_how_to_convert(
    tmp_path, name, content, message
):
    """An iPhone's HEIC photo was 'not a readable image (corrupt, truncated or unknown
    format)': a user would take a good photo for a damaged one."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        read_image(str(path))
    assert str(info.value).startswith(f"{path}: ") and "corrupt" not in str(info.value)


def test_truncated_jpeg_is_refused(shared_data, tmp_path):
    data = (shared_data / "images" / "obama.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated image file") as info:
        read_image(str(path))
    assert "cut.jpg" in str(info.value)


@pytest.mark.parametrize("marker", [0xC4, 0xDB, 0xE1, 0xFE])
def test_a_jpeg_with_a_corrupt_byte_in_its_scan_is_read_and_a_cut_one_still_refused(
    shared_data, tmp_path, marker
):
    """A bit flip on a flaky SD card (an FF and a marker's code in the coded data) made the
    file 'truncated (the end of the image data is missing)', though its end was there; it
    was read before, with a glitch where the error is, as libjpeg decodes it."""
    whole = (shared_data / "images" / "obama.jpg").read_bytes()
    sos = whole.index(b"\xff\xda")
    path = tmp_path / "flipped.jpg"
    for k in range(1, 10):  # here and there in the coded data
        data = bytearray(whole)
        at = sos + (len(data) - sos) * k // 10
        data[at : at + 2] = bytes([0xFF, marker])
        path.write_bytes(bytes(data))
        assert read_image(str(path)).shape[:2] == cv2.imread(str(path)).shape[:2], at
        path.write_bytes(bytes(data[: len(data) - 10]))  # and that file cut short
        with pytest.raises(ImageError, match="truncated image file"):
            read_image(str(path))


def _encoded(photo: np.ndarray, suffix: str, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(suffix, photo, list(params))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    ("suffix", "params"),
    [(".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), (".png", ())],
)
def test_an_image_cut_anywhere_is_refused_as_truncated(photo, tmp_path, suffix, params):
    """A JPEG or PNG cut short decodes to a half-grey picture in some OpenCV builds: it
    is refused wherever the cut falls, even one byte before the end."""
    data = _encoded(photo, suffix, params)
    for cut in (len(data) // 10, len(data) // 2, len(data) * 9 // 10, len(data) - 2, len(data) - 1):
        path = tmp_path / f"cut{cut}{suffix}"
        path.write_bytes(data[:cut])
        with pytest.raises(ImageError, match="truncated image file"):
            read_image(str(path))


def test_a_cut_jpeg_whose_exif_thumbnail_survives_is_refused(photo, tmp_path):
    """The EXIF thumbnail is a whole JPEG inside the photo's first segment: its end is
    not taken for the photo's."""
    thumbnail = _encoded(cv2.resize(photo, (40, 30)), ".jpg")
    exif = b"Exif\x00\x00" + thumbnail
    data = _encoded(photo, ".jpg")
    data = data[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + data[2:]
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(thumbnail) + 3000])
    with pytest.raises(ImageError, match="truncated image file"):
        read_image(str(path))


@pytest.mark.parametrize(
    ("suffix", "trailer"),
    [
        # a Pixel or Samsung motion photo: the JPEG, then its video (marker-like bytes too)
        (".jpg", b"\x00\x00\x00\x18ftypmp42\xff\xd8\xff\xd9" + bytes(range(256)) * 40),
        (".jpg", bytes(8192)),  # zero padding (card recovery, some cameras)
        (".png", b"\x00\x00\x00\x00IEND" + bytes(8192)),  # bytes after IEND
    ],
)
def test_data_after_the_image_end_is_not_taken_for_damage(photo, tmp_path, suffix, trailer):
    """Phones append a video or a trailer after the image's end, and viewers show the
    photo: so does read_image (such files were refused as truncated)."""
    data = _encoded(photo, suffix)
    path = tmp_path / f"PXL_MP{suffix}"
    path.write_bytes(data + trailer)
    plain = tmp_path / f"plain{suffix}"
    plain.write_bytes(data)
    assert np.array_equal(read_image(str(path)), read_image(str(plain)))


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
