"""Video clips the tests and benchmarks build from the bundled and shared ones."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import REPO

DEMO_CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"
EMPTY_FRAME = 48  # a frame of the demo clip in which MTCNN finds no face


def read_frames(path: Path, first: int = 0, count: int | None = None, every: int = 1) -> list:
    """Frames ``first``, ``first + every``, ... of a video (``count`` of them, or to the end)."""
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    try:
        while count is None or len(frames) < count:
            ok, image = capture.read()
            if not ok:
                break
            if index >= first and (index - first) % every == 0:
                frames.append(image)
            index += 1
    finally:
        capture.release()
    return frames


def noisy_copies(image: np.ndarray, count: int, sigma: float, seed: int = 0) -> list:
    """``count`` copies of ``image`` with Gaussian noise of ``sigma`` grey levels each, as a
    still camera's sensor gives."""
    rng = np.random.default_rng(seed)
    return [
        np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)
        for _ in range(count)
    ]


def doorway_clip(out: Path, still_s: float, scale: float = 1.0, sigma: float = 3.0) -> Path:
    """A quiet camera: the demo clip's empty frame held ``still_s`` seconds (with sensor
    noise), then the whole demo clip (people come in: faces, cuts). MPEG-4 Part 2 in MP4, at
    the demo clip's frame rate, ``scale`` times its size."""
    capture = cv2.VideoCapture(str(DEMO_CLIP))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    frames = read_frames(DEMO_CLIP)
    if scale != 1.0:
        frames = [
            cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) for f in frames
        ]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for image in noisy_copies(frames[EMPTY_FRAME], round(still_s * fps), sigma):
            writer.write(image)
        for image in frames:
            writer.write(image)
    finally:
        writer.release()
    return out


# the codecs IP cameras stream, as GStreamer encodes them: encoder (and its package), parser,
# container (MJPEG in QuickTime: MP4 has no JPEG video); x264enc's options are set below
ENCODERS = {
    "h264": ("x264enc", "gstreamer1.0-plugins-ugly", "h264parse ! mp4mux"),
    "h265": ("x265enc", "gstreamer1.0-plugins-bad", "h265parse ! mp4mux"),
    "mjpeg": ("jpegenc", "gstreamer1.0-plugins-good", "jpegparse ! qtmux"),
}


def encoded_clip(
    out: Path, frames: list, codec: str = "h264", interlaced: bool = False, fps: str = "30000/1001"
) -> Path:
    """``frames`` (BGR, all one size) as ``codec`` (a key of ENCODERS) in MP4 or QuickTime,
    through GStreamer (OpenCV's writer has none of these encoders); a keyframe a second.
    ``interlaced`` (H.264): field-coded, as an analog camera behind a DVR or a 1080i source
    sends, each frame's odd lines taken from the next frame (two fields, two moments).
    Skips the test where gst-launch-1.0 or the encoder is missing."""
    encoder, package, tail = ENCODERS[codec]
    if shutil.which("gst-launch-1.0") is None or shutil.which("gst-inspect-1.0") is None:
        pytest.skip(f"no gst-launch-1.0 (GStreamer) to encode a {codec} test clip")
    if subprocess.run(["gst-inspect-1.0", encoder], capture_output=True, timeout=60).returncode:
        pytest.skip(f"no {encoder} ({package}) to encode a {codec} test clip")
    if interlaced:
        woven = [a.copy() for a in frames[:-1]]
        for image, later in zip(woven, frames[1:], strict=True):
            image[1::2] = later[1::2]
        frames = woven
    height, width = frames[0].shape[:2]
    fields = "interlaced=true top-field-first=true" if interlaced else ""
    if codec == "h264":
        encoder += (
            f" speed-preset=veryfast key-int-max=30 bframes=0 interlaced={str(interlaced).lower()}"
        )
    elif codec == "h265":
        encoder += " speed-preset=veryfast key-int-max=30 option-string=bframes=0"
    pipeline = (
        f"fdsrc fd=0 blocksize={frames[0].nbytes} ! rawvideoparse format=bgr width={width} "
        f"height={height} framerate={fps} {fields} ! videoconvert ! video/x-raw,format=I420 ! "
        f"{encoder} ! {tail} ! filesink location={out}"
    )
    data = b"".join(np.ascontiguousarray(image).tobytes() for image in frames)
    subprocess.run(
        ["gst-launch-1.0", "-q", "-e", *pipeline.split()], input=data, check=True, timeout=300
    )
    return out


def opencv_reads_interlaced(clip: Path) -> bool:
    """Whether this OpenCV's FFmpeg turns the interlaced ``clip`` into pictures: OpenCV 5.1's
    wheels do; 5.0's and older cannot convert interlaced video and read every frame black
    or one stale picture over and over, with a read that says it succeeded."""
    capture = cv2.VideoCapture(str(clip))
    try:
        samples = [image[::4, ::4] for ok, image in (capture.read() for _ in range(3)) if ok]
    finally:
        capture.release()
    return (
        len(samples) == 3
        and all(sample.any() for sample in samples)
        and not np.array_equal(samples[1], samples[2])
    )


def paused_clip(out: Path, frames: list, fps: float, pause_after: int, pause_s: float) -> Path:
    """``frames`` as MPEG-4 Part 2 in MP4 at ``fps``, with a pause of ``pause_s`` seconds
    after the first ``pause_after`` of them: a variable frame rate, as a motion-triggered
    recorder's. OpenCV writes a constant rate: the pause goes into the file's table of frame
    durations (the ``stts`` box, one entry becoming three)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for image in frames:
        writer.write(image)
    writer.release()
    data = bytearray(out.read_bytes())
    path = _box_path(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"])
    mdhd = _box_path(data, [b"moov", b"trak", b"mdia", b"mdhd"])[-1]
    assert data[mdhd + 8] == 0, "a version-0 mdhd"
    timescale = int.from_bytes(data[mdhd + 20 : mdhd + 24], "big")
    stts = path[-1]
    assert int.from_bytes(data[stts + 12 : stts + 16], "big") == 1, (
        "one stts entry (a constant rate)"
    )
    count, delta = (int.from_bytes(data[stts + k : stts + k + 4], "big") for k in (16, 20))
    entries = [(pause_after - 1, delta), (1, delta + round(pause_s * timescale))]
    entries.append((count - pause_after, delta))
    table = b"".join(n.to_bytes(4, "big") + d.to_bytes(4, "big") for n, d in entries)
    box = (24 + 16).to_bytes(4, "big") + b"stts" + bytes(4) + (3).to_bytes(4, "big") + table
    assert data.find(b"mdat") < path[0], "the index after the frames (no offsets move)"
    for start in path[:-1]:  # each box holding stts grows by the 16 bytes added
        size = int.from_bytes(data[start : start + 4], "big")
        data[start : start + 4] = (size + 16).to_bytes(4, "big")
    data[stts : stts + 24] = box
    edts = _box_path(data, [b"moov", b"trak", b"edts"])[-1]
    data[edts + 4 : edts + 8] = b"free"  # its edit list would end the track at the old length
    out.write_bytes(bytes(data))
    return out


def _box_path(data: bytearray, kinds: list[bytes]) -> list[int]:
    """The offsets of the nested ISO-BMFF boxes ``kinds`` (the first of each kind)."""
    offsets, start, end = [], 0, len(data)
    for kind in kinds:
        at = start
        while at < end:
            size = int.from_bytes(data[at : at + 4], "big")
            if data[at + 4 : at + 8] == kind:
                break
            at += size
        else:
            raise ValueError(f"no {kind!r} box")
        offsets.append(at)
        start, end = at + 8, at + size
    return offsets


# bytes of the demo clip zeroed, its index intact: the frames after them do not decode
MOSTLY_LOST = (150_000, 560_000)  # 63 of its 275 frames decode (to 2.1 s of 9.2)
END_LOST = (450_000, 560_000)  # 191 of 275 (to 6.3 s): Lin-Manuel Miranda's close-up cut


def damaged_clip(out: Path, hole: tuple[int, int]) -> Path:
    """The demo clip with the bytes ``hole`` zeroed, as an NVR export damaged on its disk:
    it opens, its header announces all its frames, and the decoder stops at the hole."""
    data = bytearray(DEMO_CLIP.read_bytes())
    data[hole[0] : hole[1]] = bytes(hole[1] - hole[0])
    out.write_bytes(bytes(data))
    return out
