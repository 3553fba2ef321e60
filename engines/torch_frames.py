"""Frames on the torch backend's device, uploaded once per batch and shared.

The device pipeline (``engines.torch_mtcnn.DeviceMTCNN``) and the device FaceNet
(``engines.torch_facenet.DeviceFaceNet``) both read a batch's frames on the device: the
detector for its pyramid and crops, FaceNet for the face crops. ``DEVICE_FRAMES`` keeps the
frames of the current batch, so that FaceNet finds the detector's upload instead of copying
each frame again. A batch starts with each ``detect`` call: the store forgets earlier frames
then, since their host arrays may have been refilled since (a reused buffer keeps its
identity). Host arrays are held weakly and recognised by identity.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from engines.images import as_bgr8
from engines.torch_backend import import_torch


class DeviceFrame:
    """One frame on the device: ``image`` (1, 3, H, W) float32 of the integer pixel values
    in RGB order when ``rgb`` (else BGR), made when first asked for (by the device FaceNet;
    the detector reads only the integral image), and its integral image ``sums`` (H+1, W+1, 3)
    int32 in the same order (for the pyramid and area-averaged crops), made when first asked
    for or for several frames at once (``integrate``)."""

    def __init__(self, frame: np.ndarray, device: Any, rgb: bool) -> None:
        torch = import_torch()
        bgr = as_bgr8(frame)
        self.image_hw: tuple[int, int] = (bgr.shape[0], bgr.shape[1])
        self.rgb = rgb
        pixels = torch.from_numpy(np.ascontiguousarray(bgr)).to(device, non_blocking=True)
        self._pixels = pixels.flip(2) if rgb else pixels  # (H, W, 3) uint8
        self.stacks: dict[tuple[int, ...], Any] = {}  # see DeviceMTCNN._stacked_sums
        self._stack: tuple[Any, int] | None = None

    @cached_property
    def image(self) -> Any:
        return self._pixels.permute(2, 0, 1).unsqueeze(0).float()

    @property
    def in_stack(self) -> tuple[Any, int]:
        """The integral images this frame's was made with (N, H+1, W+1, 3), and its place
        there."""
        if self._stack is None:
            return integrate([self]), 0  # which integrate() also keeps in self._stack
        return self._stack

    @property
    def sums(self) -> Any:
        stack, position = self.in_stack
        return stack[position]


def integrate(frames: Sequence[DeviceFrame]) -> Any:
    """The integral images of frames of one size, made together: (N, H+1, W+1, 3) int32
    (int64 for frames over 8.4 megapixels), each frame's ``sums`` a view of it."""
    torch = import_torch()
    pixels = torch.stack([frame._pixels for frame in frames])
    count, height, width, channels = pixels.shape
    # int32 holds the total of a frame up to 8.4 megapixels (4K); twice the bytes beyond
    exact = torch.int32 if height * width * 255 < 2**31 else torch.int64
    sums = torch.zeros((count, height + 1, width + 1, channels), dtype=exact, device=pixels.device)
    inner = sums[:, 1:, 1:]
    inner.copy_(pixels)
    inner.cumsum_(1)
    inner.cumsum_(2)
    for position, frame in enumerate(frames):
        frame._stack = (sums, position)
    return sums


class DeviceFrames:
    """The current batch's uploads, keyed by host array identity, device and channel order
    (at most ``keep``: a caller that never starts a batch does not grow it without end)."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self.uploads = 0  # frames copied to a device so far (for tests and profiles)
        self._lock = threading.Lock()
        self._frames: dict[tuple[int, str, bool], tuple[weakref.ref[np.ndarray], DeviceFrame]] = {}

    def start_batch(self) -> None:
        with self._lock:
            self._frames.clear()

    def get(self, frame: np.ndarray, device: Any, rgb: bool) -> DeviceFrame:
        key = (id(frame), str(device), rgb)
        with self._lock:
            held = self._frames.get(key)
            if held is not None and held[0]() is frame:
                return held[1]
            uploaded = DeviceFrame(frame, device, rgb)
            self.uploads += 1
            if len(self._frames) >= self.keep:
                self._frames.pop(next(iter(self._frames)))
            self._frames[key] = (weakref.ref(frame), uploaded)
            return uploaded


DEVICE_FRAMES = DeviceFrames()
