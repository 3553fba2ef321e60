"""Dark frames brightened before detection (daemon.low_light), and only dark ones."""

from __future__ import annotations

import cv2
import numpy as np
from prometheus_client import REGISTRY

from daemon.camera_frames import FrameQueues
from daemon.config_file import parse_config


def _reader_frames(tmp_path, frames: list, **camera) -> tuple[list, list]:
    """The frames of a clip of ``frames`` as decoded, and as a camera reader hands them on."""
    from daemon.cameras import CameraReader
    from tests.clips import read_frames

    clip = tmp_path / "clip.mp4"
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    for image in frames:
        writer.write(image)
    writer.release()
    hall = {"name": "hall", "url": str(clip), "fps": 30, **camera}  # (every frame)
    queues = FrameQueues(["hall"], 100)
    reader = CameraReader(parse_config({"cameras": [hall]}).cameras[0], queues)
    capture = cv2.VideoCapture(str(clip))
    assert reader._read(capture) == len(frames)
    capture.release()
    return read_frames(clip), [frame.image for frame in queues.take(100, 0.0)]


def test_a_dark_cameras_frames_are_brightened_and_its_faces_found_a_lit_one_is_untouched(
    detector, tmp_path
) -> None:
    """A camera at night short of gain (22 % of the light, sensor noise): MTCNN found a
    third of the faces in its frames. The reader stretches a dark frame's levels
    (``cameras[].brighten_dark``, on by default), and most faces are found again; a lit
    camera's frames, and a dark one's with brighten_dark: false, leave it as decoded."""
    from daemon.low_light import brightened
    from tests.clips import DEMO_CLIP, read_frames

    lit = read_frames(DEMO_CLIP, every=30, count=10)
    noise = np.random.default_rng(0)
    dark = [np.clip(f * 0.22 + noise.normal(0, 4, f.shape), 0, 255).astype(np.uint8) for f in lit]

    def faces(images: list) -> int:
        return sum(len(found) for found in detector.detect(images))

    decoded, handed = _reader_frames(tmp_path, dark)
    brighter = [brightened(image) for image in decoded]
    shown = [next((i for i, b in enumerate(brighter) if np.array_equal(h, b)), -1) for h in handed]
    assert len(shown) >= 5 and -1 not in shown  # (frames may be skipped on the way)
    found, before = faces(handed), faces([decoded[i] for i in shown])
    assert found >= 2 * before >= 2, (found, before)
    assert found >= 0.6 * faces([lit[i] for i in shown])
    for frames, off in ((dark, {"brighten_dark": False}), (lit, {})):
        decoded, handed = _reader_frames(tmp_path, frames, **off)
        assert len(handed) >= 5  # (frames may be skipped on the way)
        assert all(any(np.array_equal(h, d) for d in decoded) for h in handed)


def test_only_a_dark_frame_is_brightened_not_a_lit_black_or_dim_stage() -> None:
    """A frame whose brightest 1 % reaches grey 80 (a dark stage with its lit actor too) is
    left as it is, the same array; so is a black one (a covered lens: noise); a dark frame
    comes out spread over the levels."""
    from daemon.low_light import brightened

    noise = np.random.default_rng(1)
    stage = noise.integers(0, 20, (90, 160, 3)).astype(np.uint8)
    stage[30:50, 60:80] = 180  # the lit actor: 1/36 of the frame
    black = noise.integers(0, 4, (90, 160, 3)).astype(np.uint8)
    dark = noise.integers(5, 50, (90, 160, 3)).astype(np.uint8)
    assert brightened(stage) is stage and brightened(black) is black
    out = brightened(dark)
    assert out.dtype == np.uint8 and out.shape == dark.shape
    assert out.max() < 255 and np.percentile(out, 99) > 200 and np.percentile(out, 1) < 10


def test_a_person_lit_by_a_lamp_in_a_dark_frame_is_still_found_once_it_is_brightened(
    detector,
) -> None:
    """A night yard with one person under a porch lamp: the lit head is under 1 % of the
    frame, so the frame counts as dark and is brightened. The lit face keeps its contrast
    and is found as in the raw frame (stretched to white, it was lost in all six)."""
    from daemon.low_light import brightened
    from tests.clips import DEMO_CLIP, read_frames

    frames = read_frames(DEMO_CLIP, every=30, count=5)
    noise = np.random.default_rng(0)
    heads = {0: (509, 28, 580, 123), 4: (181, 12, 312, 179)}  # (x1, y1, x2, y2) in the clip
    for k, (x1, y1, x2, y2) in heads.items():
        lamp = (1400, 700, 1400 + x2 - x1, 700 + y2 - y1)  # where the lit head goes
        for light in (0.08, 0.15, 0.25):
            yard = cv2.resize(frames[1], (1920, 1080)) * light
            night = np.clip(yard + noise.normal(0, 3, yard.shape), 0, 255).astype(np.uint8)
            night[lamp[1] : lamp[3], lamp[0] : lamp[2]] = frames[k][y1:y2, x1:x2]
            out = brightened(night)
            assert out is not night and _face_in(detector, night, lamp)
            assert _face_in(detector, out, lamp), (k, light)


def _face_in(detector, image: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether ``detector`` finds a face whose centre lies in ``box`` of ``image``."""
    for x1, y1, x2, y2 in detector.detect([image])[0].bbox_xyxy:
        if box[0] < (x1 + x2) / 2 < box[2] and box[1] < (y1 + y2) / 2 < box[3]:
            return True
    return False


def test_a_lit_patch_of_a_dark_frame_keeps_its_levels_apart_none_turns_white() -> None:
    """The brightened frame's lit part (0.5 % of it, grey 100 to 250) keeps every level
    apart and in order, at about half its contrast; 255 stays 255 and black black."""
    from daemon.low_light import brightened

    frame = np.random.default_rng(2).integers(0, 30, (400, 600), dtype=np.uint8)
    frame[:30, :40] = np.linspace(100, 250, 40).astype(np.uint8)  # the lit patch, 0.5 %
    frame[-1, 0], frame[-1, -1] = 255, 0
    out = brightened(frame)
    assert out is not frame
    patch, lifted = frame[:30, :40].astype(int), out[:30, :40].astype(int)
    assert np.all(np.diff(lifted[0]) > 0) and lifted[0, -1] - lifted[0, 0] >= 70
    assert out[-1, 0] == 255 and out[-1, -1] == 0 and np.all(lifted >= patch)


def _frame_of_levels(counts: dict[int, int]) -> np.ndarray:
    """A grey frame whose sampled pixels (every 4th of every 4th row: ``levels``) hold
    ``counts`` (grey level: how many of the 10 000), each pixel a 4 x 4 block."""
    grey = np.concatenate([np.full(n, level, np.uint8) for level, n in counts.items()])
    return np.repeat(np.repeat(grey.reshape(100, 100), 4, axis=0), 4, axis=1)


def test_a_dark_frames_black_stays_black_and_its_top_is_lifted_unless_a_lamp_lights_it() -> None:
    """A dark frame (its brightest 1 % at grey 40, its darkest 1 % at 20) with a few black
    pixels under its darkest 1 %: they stay black (no speckle of another level). With no lit
    part (its brightest 0.1 % a few levels above its 1 %) the brightest 1 % goes up to
    about grey 228 of TOP 240; with a lamp (its brightest 0.1 % 40 levels above) to LIT_TOP
    only, the lamp's face keeping its contrast."""
    from daemon.low_light import LIT_TOP, brightened, levels

    for lamp, top in ((45, 228), (80, LIT_TOP)):
        frame = _frame_of_levels({0: 50, 20: 9750, 40: 100, lamp: 100})
        assert levels(frame, (0.01, 0.99, 0.999)) == (20, 40, lamp)
        out = brightened(frame)
        assert out[frame == 0].max() == 0, lamp
        assert out[frame == 20].max() == 0 and np.all(out[frame == 40] == top), lamp


def test_a_near_flat_dark_frames_noise_is_not_stretched_into_a_picture() -> None:
    """A dark frame of one grey with a level of noise either way (a lens cap in dim light,
    a blank wall): a level of noise is lifted at most TOP / MIN_SPAN (30 levels), not to
    half the range, which the motion gate and the detector saw as texture."""
    from daemon.low_light import MIN_SPAN, TOP, brightened

    frame = np.random.default_rng(3).integers(29, 32, (240, 320), dtype=np.uint8)
    out = brightened(frame).astype(int)
    assert out is not frame
    steps = [out[frame == level].max() - out[frame == level - 1].max() for level in (30, 31)]
    assert max(steps) <= TOP / MIN_SPAN, steps


def test_a_covered_lens_at_night_is_not_brightened_and_dark_means_what_is_brightened() -> None:
    """A covered lens's sensor noise up to grey 9 (its brightest 1 % under BLACK_P99) is left
    as it is (there is nothing to bring out). An enrolment photo is noted dark exactly when
    the cameras' frames would be brightened: its brightest 1 % at grey 79 is, at 80 is not."""
    from daemon.low_light import brightened, is_dark, levels

    black = np.random.default_rng(4).integers(0, 10, (240, 320), dtype=np.uint8)
    assert levels(black)[1] == 9 and brightened(black) is black
    for high, dark in ((79, True), (80, False)):
        photo = _frame_of_levels({30: 9000, high: 1000})
        assert levels(photo)[1] == high
        assert is_dark(photo) is dark and (brightened(photo) is not photo) is dark


def test_a_cameras_dark_frames_are_counted_and_said_once_its_lit_ones_not(caplog) -> None:
    """facewatch_frames_brightened_total counts the camera's dark frames only (a lit frame
    between them is not brightened, so not counted), and the log says it once, at the
    first dark frame, not at every one (25 lines a second)."""
    from daemon.low_light import Brightener

    def count() -> float:
        return (
            REGISTRY.get_sample_value(
                "facewatch_frames_brightened_total", {"camera": "yard-low-light"}
            )
            or 0.0
        )

    dark = _frame_of_levels({20: 9000, 40: 1000})
    lit = _frame_of_levels({60: 9000, 200: 1000})
    brighten = Brightener("yard-low-light")
    with caplog.at_level("INFO", logger="daemon.low_light"):
        for frame in (lit, dark, lit, dark, dark):
            brighten(frame)
    assert count() == 3
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("camera yard-low-light: its frames are dark")


def test_a_still_scene_at_the_edge_of_dark_is_not_brightened_by_fits_and_starts() -> None:
    """At dusk a still scene's brightest 1 % sits at grey 80, where brightening stops, and
    sensor noise moves it a level either way. Frames a level apart came out one raw and the
    next 3 times brighter, and the motion gate called every frame moved; now they come out
    nearly alike (the lift fades out towards grey 80) and the scene is still."""
    from daemon.low_light import DARK_P99, brightened, levels
    from daemon.motion import MotionDetector
    from tests.clips import DEMO_CLIP, read_frames

    scene = cv2.resize(read_frames(DEMO_CLIP, every=30, count=5)[4], (1280, 720))
    lighter = cv2.convertScaleAbs(scene, alpha=DARK_P99 / levels(scene)[1])
    darker = cv2.subtract(lighter, 1)  # a level darker
    assert levels(darker)[1] == DARK_P99 - 1 and levels(lighter)[1] == DARK_P99
    one, other = brightened(darker), brightened(lighter)
    assert other is lighter and np.abs(one.astype(int) - other.astype(int)).max() <= 10
    gate = MotionDetector(15.0, 0.002)
    moved = [gate.moved(brightened(f)) for f in [darker, lighter] * 10]
    assert not any(moved[1:]), moved
