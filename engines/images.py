"""Bring any decoded image to what the models take: HxWx3 uint8 BGR (OpenCV's order)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from engines.base import Floats, Indices
from engines.image_files import undecodable_reason

JPEG_TAIL_BYTES = 4096  # where a complete JPEG's end marker is, when its segments mislead


class ImageError(ValueError):
    """An image that cannot be used; the message says why."""


def as_bgr8(image: np.ndarray) -> np.ndarray:
    """Grayscale, BGRA and 16-bit images become 8-bit BGR (16-bit ones scaled by the bits
    their brightest colour value uses, alpha aside: each image on its own, so frames of a
    16-bit video whose brightest pixel crosses a power of two differ by x2); a 3-channel
    uint8 image is returned as is."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected HxW, HxWx1, HxWx3 or HxWx4 pixels, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image is empty ({image.shape[1]}x{image.shape[0]} pixels)")
    if image.dtype == np.uint16:
        # 10-, 12- or 14-bit data (raw converters, scientific cameras), or 0-255 values, are
        # stored in 16 bits too: keep the top 8 of the bits in use, not of all 16 (near black).
        # The colours' bits: an opaque alpha (65535) says nothing of them.
        shift = max(int(image[..., :3].max()).bit_length() - 8, 0)
        image = (image >> shift).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"expected uint8 or uint16 pixels, got {image.dtype}")
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def shown(path: str | Path) -> str:
    """A file name fit to print: bytes that are not UTF-8 as the replacement character."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def cv_path(path: str | Path) -> str:
    """``path`` for OpenCV's file functions, which crash the process (not fail) on a name
    that is not valid UTF-8: an ImageError naming it instead."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ImageError(f"{shown(text)}: the file name is not valid UTF-8; rename it") from None
    return text


def write_image(path: str | Path, bgr: np.ndarray, params: tuple[int, ...] = ()) -> None:
    """Write an image (format by the suffix); OSError naming the file when it cannot."""
    try:
        ok, encoded = cv2.imencode(Path(path).suffix or ".jpg", bgr, list(params))
    except cv2.error:
        ok = False
    if not ok:
        raise OSError(f"{shown(path)}: cannot encode the image")
    try:
        Path(path).write_bytes(encoded.tobytes())
    except OSError as exc:
        raise OSError(f"{shown(path)}: cannot write: {exc.strerror or exc}") from None


def read_image(path: str) -> np.ndarray:
    """Read an image file as 8-bit BGR, turned the way a photo viewer shows it (the EXIF
    orientation applied); raises ImageError naming the file."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    end = _image_end(data)
    if end is None:
        raise ImageError(f"{path}: truncated image file (the end of the image data is missing)")
    try:
        # Not IMREAD_UNCHANGED: that is the one mode that ignores the EXIF orientation (a
        # phone's portrait photo is stored sideways). These flags keep 16-bit and grey
        # pixels as they are and drop alpha, as as_bgr8 would.
        image = cv2.imdecode(data[:end], cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # e.g. more pixels than OpenCV decodes (CV_IO_MAX_IMAGE_PIXELS)
        reason = str(exc).strip().splitlines()[-1]
        raise ImageError(f"{path}: cannot decode: {reason}") from None
    if image is None:
        raise ImageError(f"{path}: {undecodable_reason(path, data[:16].tobytes())}")
    try:
        return as_bgr8(image)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


def _image_end(data: np.ndarray) -> int | None:
    """Where the image in ``data`` ends: None for a JPEG or PNG cut short, which decoders
    return as a half-grey picture instead of failing. Whatever follows the end (a motion
    photo's video, a phone's trailer, zero padding) is not the image's."""
    head = data[:8].tobytes()
    if head.startswith(b"\xff\xd8"):
        return _jpeg_end(data)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_end(data)
    return len(data)


def _jpeg_end(data: np.ndarray) -> int | None:
    """Offset just past a JPEG's end-of-image marker (FF D9), or None when the file ends
    before it. Segments are skipped by their lengths, so the end of the EXIF thumbnail (a
    JPEG inside the first segment) is not taken for the photo's."""
    # Every FF that starts a marker. Inside a scan's coded data an FF is followed by 00 (a
    # stuffed byte) or by a restart marker D0-D7, so the first of these after a scan's
    # header is where its data ends.
    ff = np.flatnonzero(data[:-1] == 0xFF)
    follower = data[ff + 1]
    restart = (follower >= 0xD0) & (follower <= 0xD7)
    markers = ff[(follower != 0x00) & (follower != 0xFF) & ~restart]
    pos, scan = 2, None
    while True:
        k = int(np.searchsorted(markers, pos))
        if k == len(markers):
            return _end_after_scan(data, scan)
        pos = int(markers[k])
        code = int(data[pos + 1])
        if code == 0xD9:
            return pos + 2
        if code == 0xDA and scan is None:
            scan = pos
        if code in (0x01, 0xD8):  # markers without a segment
            pos += 2
        elif pos + 4 > len(data):
            return _end_after_scan(data, scan)
        else:
            pos += 2 + (int(data[pos + 2]) << 8 | int(data[pos + 3]))


def _end_after_scan(data: np.ndarray, scan: int | None) -> int | None:
    """Where a JPEG whose segment walk lost its way ends: after the last FF D9 in its last
    4 KB, past the start of its first scan; None when there is none (a file cut short).
    A corrupt byte in the coded data (a bit flip on a flaky SD card) reads as a marker
    whose length jumps past the end, yet the file is whole and libjpeg decodes it."""
    if scan is None:
        return None
    start = max(scan, len(data) - JPEG_TAIL_BYTES)
    end = data[start:].tobytes().rfind(b"\xff\xd9")
    return None if end < 0 else start + end + 2


def _png_end(data: np.ndarray) -> int | None:
    """Offset just past a PNG's IEND chunk, walking the chunks by their lengths; None
    when the file ends before it."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4].tobytes(), "big")
        kind = data[pos + 4 : pos + 8].tobytes()
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos if pos <= len(data) else None
    return None


def integral_image(image: np.ndarray, out: np.ndarray | None = None) -> NDArray[np.uint32]:
    """(H+1, W+1, C) running sums of a uint8 image, as uint32, written into ``out`` when it
    has that shape and type (a large frame's fresh pages cost more than the sums).

    Rectangle sums are differences of four entries; uint32 arithmetic wraps modulo 2**32,
    so the differences stay exact even when the totals of a very large frame overflow.
    """
    shape = (image.shape[0] + 1, image.shape[1] + 1, image.shape[2])
    if out is None or out.shape != shape or out.dtype != np.uint32:
        out = np.empty(shape, np.uint32)
    if image.shape[0] * image.shape[1] * 255 < 2**31:
        return cv2.integral(image, sum=out.view(np.int32), sdepth=cv2.CV_32S).view(np.uint32)
    out[0], out[:, 0] = 0, 0
    np.cumsum(image, axis=0, dtype=np.uint32, out=out[1:, 1:])
    np.cumsum(out[1:, 1:], axis=1, dtype=np.uint32, out=out[1:, 1:])
    return out


def _bins(
    start: Indices, length: Indices, size: int, limit: int
) -> tuple[Indices, Indices, Indices]:
    """Adaptive-average-pooling bins (K, size) ``[start + floor(i*n/size), start + ceil((i+1)*n/size))``
    clipped to ``[0, limit]``, and each bin's unclipped width."""
    i = np.arange(size + 1, dtype=np.int64)
    n = length[:, None]
    lo = start[:, None] + (i[None, :-1] * n) // size
    hi = start[:, None] + (i[None, 1:] * n + size - 1) // size
    return np.clip(lo, 0, limit), np.clip(hi, 0, limit), hi - lo


def area_crops(sums: np.ndarray, windows_xyxy: np.ndarray, size: int) -> Floats:
    """Crop windows (K, 4: x0, y0, x1, y1, end exclusive, may leave the image) and resize each
    to size x size by area averaging (PyTorch's ``interpolate(mode="area")``), with zeros outside
    the image. ``sums`` is the frame's ``integral_image``. Returns (K, size, size, C) float32."""
    total, count = area_crop_sums(sums, windows_xyxy, size)
    pixels = total.astype(np.float32)
    pixels /= count[..., None]
    return pixels


def area_crop_sums(
    sums: np.ndarray, windows_xyxy: np.ndarray, size: int, sums16: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """What ``area_crops`` averages: the pixel sums (K, size, size, C) of each output pixel's
    bin (uint16 or uint32) and the bin areas (K, size, size) float32. ``sums16``, the integral
    image modulo 2**16, is used instead of ``sums`` when no bin holds more than 257 pixels."""
    h, w = sums.shape[0] - 1, sums.shape[1] - 1
    x0, y0, x1, y1 = (windows_xyxy[:, k].astype(np.int64) for k in range(4))
    ylo, yhi, ycount = _bins(y0, np.maximum(y1 - y0, 1), size, h)
    xlo, xhi, xcount = _bins(x0, np.maximum(x1 - x0, 1), size, w)
    count = (ycount[:, :, None] * xcount[:, None, :]).astype(np.float32)
    if sums16 is not None and count.max(initial=0) * 255 < 2**16:
        sums = sums16
    # Flat indices into the (H+1)*(W+1) pixels of the integral image: one gather per corner.
    flat = sums.reshape(-1, sums.shape[2])
    r0, r1 = ylo[:, :, None] * (w + 1), yhi[:, :, None] * (w + 1)
    c0, c1 = xlo[:, None, :], xhi[:, None, :]
    total = np.take(flat, r1 + c1, axis=0)
    total -= np.take(flat, r0 + c1, axis=0)
    total -= np.take(flat, r1 + c0, axis=0)
    total += np.take(flat, r0 + c0, axis=0)
    return total, count


@functools.lru_cache(maxsize=64)
def _pool_geometry(
    image_hw: tuple[int, int], size_hw: tuple[int, int], channels: int
) -> tuple[Indices, Indices, Indices, Indices, Floats]:
    """For one pyramid level: row bin edges, flat column indices of the bin edges in a
    (rows, columns * channels) view, and each output pixel's bin area (h, w)."""
    (h_in, w_in), (h, w) = image_hw, size_hw
    r0, r1 = _bin_edges(h_in, h)
    c0, c1 = _bin_edges(w_in, w)
    lanes = np.arange(channels)
    flat0 = (c0[:, None] * channels + lanes).ravel()
    flat1 = (c1[:, None] * channels + lanes).ravel()
    area = ((r1 - r0)[:, None] * (c1 - c0)[None, :]).astype(np.float32)
    return r0, r1, flat0, flat1, area


def _bin_edges(n_in: int, n_out: int) -> tuple[Indices, Indices]:
    """Start and end (exclusive) of each adaptive-average-pooling bin along one axis."""
    i = np.arange(n_out + 1, dtype=np.int64)
    return (i[:-1] * n_in) // n_out, (i[1:] * n_in + n_out - 1) // n_out


class AreaPyramid:
    """Downscales of one frame by area averaging, exactly as PyTorch's
    ``interpolate(mode="area")`` (adaptive average pooling), which MTCNN's reference uses.

    Each level's bin sums are four lookups in the frame's integral image, which is computed
    once and also serves the R-Net / O-Net crops (``area_crops``).
    """

    sums: NDArray[np.uint32]
    sums16: NDArray[np.uint16]

    def __init__(self, image: np.ndarray, reuse: AreaPyramid | None = None) -> None:
        """``reuse``: a pyramid no longer needed, whose memory this one may take over."""
        self.image_hw: tuple[int, int] = (image.shape[0], image.shape[1])
        self.sums = integral_image(image, reuse.sums if reuse else None)
        # The same sums modulo 2**16: their differences are still exact where a bin holds
        # at most 257 pixels (255 * 257 < 2**16), which is every level but the smallest few,
        # and gathering them moves half the bytes.
        if reuse is not None and reuse.sums16.shape == self.sums.shape:
            self.sums16 = reuse.sums16
            np.copyto(self.sums16, self.sums, casting="unsafe")
        else:
            self.sums16 = self.sums.astype(np.uint16)

    def level(self, size_hw: tuple[int, int], rows: tuple[int, int] | None = None) -> Floats:
        """The frame resized to ``size_hw`` as (h, w, C) float32; with ``rows`` = (start,
        end), only those rows of it (a band, the same pixels as in the whole level)."""
        total, area = self.level_sums(size_hw, rows)
        level = total.astype(np.float32)
        level /= area[..., None]
        return level

    def level_sums(
        self, size_hw: tuple[int, int], rows: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """What ``level`` averages: the pixel sums (h, w, C) of each output pixel's bin
        (uint16 or uint32), and the bin areas (h, w) float32."""
        channels = self.sums.shape[2]
        r0, r1, flat0, flat1, area = _pool_geometry(self.image_hw, size_hw, channels)
        band = slice(*rows) if rows is not None else slice(None)
        r0, r1, area = r0[band], r1[band], area[band]
        table: NDArray[np.unsignedinteger[Any]] = (
            self.sums16 if area.max() * 255 < 2**16 else self.sums
        )
        sums = np.take(table, r1, axis=0)
        sums -= np.take(table, r0, axis=0)  # running sums along each row bin
        sums = sums.reshape(len(r0), -1)
        total = np.take(sums, flat1, axis=1)
        total -= np.take(sums, flat0, axis=1)
        return total.reshape(len(r0), size_hw[1], channels), area
