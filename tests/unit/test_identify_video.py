"""`facewatch identify VIDEO`: who was in a recording, and when (the video's own time), as
the daemon's pipeline finds them; with the shipped model and the demo's people."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon import identify_video
from daemon.cli import main
from tests.clips import (
    DEMO_CLIP,
    EMPTY_FRAME,
    END_LOST,
    MOSTLY_LOST,
    damaged_clip,
    paused_clip,
    read_frames,
)
from tests.conftest import REPO

PEOPLE = REPO / "configs" / "demo" / "people"
LIN = "lin-manuel-miranda"
# the demo clip as a person watching it sees it: Lin-Manuel Miranda's close-up runs from the
# cut at frame 85 (2.84 s) to the cut to the audience at frame 216 (7.21 s); before it, him
# far off on the stage (a face too small to recognise) and a profile, after it the audience
ON_STAGE_S = (2.84, 7.21)
TOLERANCE_S = 0.5  # 5 fps: a frame is searched every 0.2 s; a cut may cost a frame or two
VISIT_KEYS = {k.strip() for k in identify_video.VISIT_KEYS.split(",")}


@pytest.fixture(scope="module")
def demo_gallery(shipped_model, tmp_path_factory) -> Path:
    """The demo's two people enrolled with the shipped model (as the demo does)."""
    gallery = tmp_path_factory.mktemp("demo") / "gallery.sqlite"
    args = ["--model", str(shipped_model), "--gallery", str(gallery), "--threads", "2"]
    assert main(["enroll", "--dir", str(PEOPLE), *args, "--no-progress"]) == 0
    return gallery


@pytest.fixture
def identify(shipped_model, demo_gallery, capsys):
    """Run `facewatch identify ARGS` against the demo gallery: (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        extra = ["--model", str(shipped_model), "--gallery", str(demo_gallery)]
        code = main(["identify", *args, *extra, "--threads", "2", "--no-progress"])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_the_demo_clip_names_lin_manuel_miranda_while_he_is_on_screen(identify) -> None:
    """The visits in the demo clip, from when to when in the video: Lin-Manuel Miranda named
    during his close-up, in the clip's own time, and nobody named in the audience (identify
    refused a video: 'not a readable image'). --json: one object per visit."""
    code, out, err = identify(str(DEMO_CLIP))
    assert code == 0, err
    header, *lines, summary = out.splitlines()
    assert header == f"{DEMO_CLIP}: visits, each as it ends (from when to when in the video):"
    named = [line for line in lines if LIN in line]
    assert named and all(line.startswith("  00:00:0") for line in named), out
    assert all(" to 00:00:0" in line for line in lines), out
    assert summary.startswith(f"{DEMO_CLIP}: ") and f"{LIN} " in summary, summary
    assert "in 00:00:09.1 of video (46 frames taken at 5 fps of 275" in summary, summary

    code, out, err = identify(str(DEMO_CLIP), "--json")
    assert code == 0, err
    visits = [json.loads(line) for line in out.splitlines()]
    assert visits and all(set(v) == VISIT_KEYS for v in visits)
    assert all(v["source"] == str(DEMO_CLIP) for v in visits)
    his = [v for v in visits if v["identity"] == LIN]
    assert his and all(v["confidence"] > 0.5 and v["distance"] < 0.154 for v in his)
    start, end = min(v["start_s"] for v in his), max(v["end_s"] for v in his)
    # his close-up, all along; the profile before it (from 2.0 s) may join his visit (that
    # cut keeps a dark block of the stage alike: not taken for one), the audience after it
    # does not (the cut to it ends his track)
    assert ON_STAGE_S[0] - 1.0 <= start <= ON_STAGE_S[0] + TOLERANCE_S, his
    assert ON_STAGE_S[1] - TOLERANCE_S <= end <= ON_STAGE_S[1], his
    assert sum(v["end_s"] - v["start_s"] for v in his) > 0.8 * (end - start)
    first = min(his, key=lambda v: v["start_s"])
    assert (
        first["start"] == identify_video.clock(first["start_s"]) and first["start"][:7] == "00:00:0"
    )
    audience = [v for v in visits if v["start_s"] >= ON_STAGE_S[1] - 0.1]
    assert audience and all(v["identity"] is None for v in audience)
    assert all(v["until"] == "end" for v in audience if v["end_s"] >= 9.0)


def test_a_face_after_a_cut_is_not_the_one_before_it(identify, tmp_path) -> None:
    """The demo clip from 5 s into Lin-Manuel Miranda's close-up to its end, at 10 fps: the
    picture cuts to the audience (frame 211, 2.04 s into this clip) and an audience member,
    turned to the side, appears where his face was. His visit ends at the cut, and the
    audience member's faces are a visit of their own, unknown. They continued his track: one
    visit, lin-manuel-miranda, to the clip's end."""
    first, cut = 150, 211
    clip = tmp_path / "cut.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 30000 / 1001, (640, 360))
    for frame in read_frames(DEMO_CLIP, first):
        writer.write(frame)
    writer.release()
    cut_s = (cut - first) * 1001 / 30000
    code, out, err = identify(str(clip), "--fps", "10", "--json")
    assert code == 0, err
    visits = [json.loads(line) for line in out.splitlines()]
    his = [v for v in visits if v["identity"] == LIN]
    assert len(his) == 1 and cut_s - 0.2 <= his[0]["end_s"] < cut_s, out
    after = [v for v in visits if v["end_s"] > cut_s]
    assert after and all(v["start_s"] >= cut_s and v["identity"] is None for v in after), out


def test_a_variable_frame_rate_video_is_timed_by_its_frames_own_times(identify, tmp_path) -> None:
    """A motion recording: 1 s of Lin-Manuel Miranda, nothing recorded for 40 s, then 1 s
    more. His visits are at 0-1 s and 41-42 s of the video (frame / fps said 1-2 s), two
    visits: the daemon's tracks end in a 40 s gap."""
    frames = read_frames(DEMO_CLIP, first=120, count=60)
    clip = paused_clip(tmp_path / "motion.mp4", frames, fps=30, pause_after=30, pause_s=40)
    code, out, err = identify(str(clip), "--json")
    assert code == 0, err
    visits = sorted((json.loads(line) for line in out.splitlines()), key=lambda v: v["start_s"])
    assert [v["identity"] for v in visits] == [LIN, LIN], visits
    before, after = visits
    assert before["start_s"] == pytest.approx(0.0, abs=0.1)
    assert before["end_s"] == pytest.approx(0.8, abs=0.2)
    assert before["until"] == "left"
    assert after["start_s"] == pytest.approx(41.0, abs=0.1) and after["start"] == "00:00:41.0"
    assert after["end_s"] == pytest.approx(41.8, abs=0.2) and after["until"] == "end"
    assert "in 00:00:42.0 of video" in err


def test_a_video_without_faces_says_no_one(identify, tmp_path) -> None:
    """An empty room: 'no one', exit status 0, and no visit in --json."""
    clip = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 25, (640, 360))
    empty = read_frames(DEMO_CLIP, first=EMPTY_FRAME, count=1)[0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        writer.write(np.clip(empty + rng.normal(0, 3, empty.shape), 0, 255).astype(np.uint8))
    writer.release()
    code, out, err = identify(str(clip))
    assert code == 0, err
    assert out.splitlines()[1].startswith(f"{clip}: no one in 00:00:02.0 of video"), out
    code, out, err = identify(str(clip), "--json")
    assert code == 0 and out == "" and f"{clip}: no one" in err


def test_a_recording_cut_short_is_warned_of(identify, tmp_path) -> None:
    """An NVR export damaged in the middle: only 63 of its 275 frames decode. identify gave
    3 visits 'in 00:00:02.1 of video', no word of the rest (Lin-Manuel Miranda's visit lost
    unsaid). Now the summary says it was cut short, with a warning naming the file and a
    {source, warning} record; exit status 0 (a clip cut without re-encoding has a header
    that counts frames no player shows: a warning, not a failure). One whose end is lost
    (191 of 275) likewise."""
    holed = damaged_clip(tmp_path / "holed.mp4", MOSTLY_LOST)
    code, out, err = identify(str(holed))
    assert code == 0, err
    assert "in 00:00:02.1 of video" in out and "cut short: 63 of the 275 frames decoded" in out
    assert (
        f"warning: {holed}: cut short: 63 of the 275 frames its header announces could be "
        "decoded (up to 00:00:02.1 of 00:00:09.2); the rest cannot be read"
    ) in err
    code, out, err = identify(str(holed), "--json")
    assert code == 0, err
    *visits, last = map(json.loads, out.splitlines())
    assert last["source"] == str(holed) and "63 of the 275 frames" in last["warning"]
    assert visits and all("until" in v for v in visits)

    scratched = damaged_clip(tmp_path / "scratched.mp4", END_LOST)
    code, out, err = identify(str(scratched), "--json")
    assert code == 0, err
    *visits, last = map(json.loads, out.splitlines())
    assert LIN in {v["identity"] for v in visits}
    assert last["source"] == str(scratched) and "error" not in last
    assert (last["frames_decoded"], last["frames_announced"]) == (191, 275)
    assert f"warning: {scratched}: cut short: 191 of the 275 frames" in err
    assert "the rest cannot be read" in last["warning"]


def test_ctrl_c_keeps_the_visits_printed_and_says_where_it_stopped(
    identify, tmp_path, monkeypatch
) -> None:
    """Ctrl-C in the middle of a video: the visits that ended are printed, those in view
    then are printed as such, and it says where it stopped and which files were not done
    (exit status 130)."""
    calls = 0
    process = identify_video.Pipeline.process

    def interrupted_later(self, frames: list) -> None:
        nonlocal calls
        calls += 1
        if calls == 15:  # 2 frames a batch at 5 fps: at 5.6 s, in his close-up
            raise KeyboardInterrupt
        process(self, frames)

    monkeypatch.setattr(identify_video.Pipeline, "process", interrupted_later)
    photo = tmp_path / "later.jpg"
    cv2.imwrite(str(photo), read_frames(DEMO_CLIP, first=100, count=1)[0])
    code, out, err = identify(str(DEMO_CLIP), str(photo))
    assert code == 130
    assert f"interrupted: {DEMO_CLIP} at 00:00:0" in err and f"not done: {photo}" in err
    assert "(frame " in err
    assert LIN in out and "in view when stopped" in out
    assert str(photo) not in out


def test_a_recorders_own_suffix_is_read_as_a_video_as_detect_reads_it(identify, tmp_path) -> None:
    """An NVR export named .dav (or with no suffix): identify called it "not a readable image
    (corrupt ...)" while detect read it as a video; both now ask the same question
    (video_files.image_or_video), and a file that is neither says so."""
    export = tmp_path / "ch01_20240105.dav"
    shutil.copy(DEMO_CLIP, export)
    junk = tmp_path / "notes.dat"
    junk.write_text("tape 3, camera 2")
    code, out, err = identify(str(export), str(junk), "--fps", "1")
    assert code == 1
    assert out.startswith(f"{export}: visits, each as it ends"), out
    assert f"{junk}: not a readable image" in err and "nor a video that FFmpeg can open" in err


def test_json_piped_to_head_ends_quietly(shipped_model, demo_gallery) -> None:
    """`facewatch identify --json VIDEO | head`: the reader goes away; identify stops, as a
    pipe's writer does, without "error: ...: [Errno 32] Broken pipe" (taken for the video's
    failure, as detect did)."""
    command = [
        sys.executable, "-m", "daemon.cli", "identify", "--json", "--no-progress",
        "--model", str(shipped_model), "--gallery", str(demo_gallery), str(DEMO_CLIP),
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        reader.stdout.close()  # before its first visit: its models are still loading
        err = reader.stderr.read().decode()
        assert reader.wait(timeout=120) == 141
    assert "Broken pipe" not in err and "error" not in err, err


def test_a_photo_only_ffmpeg_reads_is_a_photo_not_a_one_frame_video(identify, tmp_path) -> None:
    """A TGA (no suffix of a photo OpenCV reads, but FFmpeg decodes it): identify took it for
    a one-frame video and said "no one" (exit 0, nothing with --json) though it shows him;
    a single frame is a photo, matched as photos are."""
    image = read_frames(DEMO_CLIP, first=150, count=1)[0]
    height, width = image.shape[:2]
    header = bytes([0, 0, 2]) + bytes(9) + width.to_bytes(2, "little")
    header += height.to_bytes(2, "little") + bytes([24, 0])  # 24-bit, rows from the bottom
    photo = tmp_path / "still.tga"
    photo.write_bytes(header + np.ascontiguousarray(image[::-1]).tobytes())
    code, out, err = identify(str(photo), "--json")
    assert code == 0, err
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["image_hw"] == [height, width]
    assert [face["identity"] for face in record["faces"]].count(LIN) == 1, record


def test_camera_reads_a_recording_with_that_cameras_settings(
    identify, shipped_model, demo_gallery, tmp_path, capsys
) -> None:
    """A sideways corridor camera's recording (its frames a quarter turn anticlockwise):
    identify found no one in it; --camera hall reads it as the daemon reads that camera,
    turned by its ``rotate`` and at its fps, and names him. A camera the config does not
    have is refused, naming those it has."""
    frames = read_frames(DEMO_CLIP, first=100, count=100)
    clip = tmp_path / "hall.mp4"
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 30, (height, width))
    for frame in frames:
        writer.write(cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE))
    writer.release()
    config = tmp_path / "facewatch.yaml"
    camera = {"name": "hall", "url": "rtsp://cam.lan/1", "rotate": 90, "fps": 10}
    recognition = {"model": str(shipped_model), "gallery": str(demo_gallery)}
    config.write_text(json.dumps({"cameras": [camera], "recognition": recognition}))

    code, out, err = identify(str(clip), "--json")
    assert code == 0 and LIN not in out, out

    def run(*args: str) -> tuple[int, str, str]:
        common = ["--config", str(config), "--threads", "2", "--no-progress", "--json"]
        code = main(["identify", *args, *common, str(clip)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("--camera", "hall")
    assert code == 0, err
    assert LIN in [json.loads(line)["identity"] for line in out.splitlines()], out
    assert "taken at 10 fps of 100" in err, err
    code, out, err = run("--camera", "garden")
    assert code == 2 and out == ""
    assert "--camera garden: no camera of that name in --config (its cameras: hall)" in err


def test_camera_checks_a_photo_with_that_cameras_threshold_and_brightening(
    shipped_model, demo_gallery, tmp_path, capsys
) -> None:
    """A snapshot of him, checked with --camera: the day camera names him (0.06 from his
    photos); the night camera, stricter (its threshold 0.02), calls him unknown as it
    would in its stream, and a dark snapshot is searched as that camera's frames are: not
    brightened where its brighten_dark is off (photos were matched at the default threshold
    and always brightened, whatever --camera said)."""
    photo, dark = tmp_path / "snapshot.png", tmp_path / "dark.png"
    frame = read_frames(DEMO_CLIP, first=150, count=1)[0]
    cv2.imwrite(str(photo), frame)
    cv2.imwrite(str(dark), (frame.astype(np.float32) * 0.15).round().astype(np.uint8))
    config = tmp_path / "facewatch.yaml"
    night = {"threshold": 0.02}
    cameras = [
        {"name": "day", "url": "rtsp://cam.lan/1"},
        {"name": "night", "url": "rtsp://cam.lan/2", "brighten_dark": False, "recognition": night},
    ]
    recognition = {"model": str(shipped_model), "gallery": str(demo_gallery)}
    config.write_text(json.dumps({"cameras": cameras, "recognition": recognition}))

    def run(camera: str, *args: str) -> list[dict]:
        common = ["--config", str(config), "--threads", "2", "--no-progress", "--json"]
        code = main(["identify", "--camera", camera, *args, *common])
        out, err = capsys.readouterr()
        assert code == 0, err
        return [face for line in out.splitlines() for face in json.loads(line)["faces"]]

    assert LIN in [face["identity"] for face in run("day", str(photo))]
    faces = run("night", str(photo))
    assert LIN not in [face["identity"] for face in faces], faces
    assert min(face["distance"] for face in faces) < 0.154  # (the default's: named there)
    shown = {}
    for camera in ("day", "night"):
        run(camera, str(dark), "--annotate", str(tmp_path / camera))
        shown[camera] = float(cv2.imread(str(tmp_path / camera / "dark.jpg")).mean())
    assert shown["day"] > 3 * shown["night"], shown


def test_someone_who_turns_away_is_not_changed_to_a_stranger(
    shared_data, shipped_model, tmp_path, capsys
) -> None:
    """A man enrolled from the first frame of a clip looks at the camera for 0.4 s, then
    turns his head to a profile, at 10 fps. The model cannot name a profile: its "unknown" is
    no evidence of someone else, so those faces cast no vote (recognition.max_turn). He was
    named, then changed to unknown while he stood there ("unknown, named headturn-man
    before")."""
    capture = cv2.VideoCapture(str(shared_data / "videos" / "head_turn_3456x2234.mp4"))
    clip, photo = tmp_path / "turn.mp4", tmp_path / "headturn-man.jpg"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 10, (960, 620))
    for index in range(480):  # its first 8 s (60 fps), at 10 fps and a camera's size
        if index % 6:
            assert capture.grab()  # (decoded, not converted: the frames between)
            continue
        ok, frame = capture.read()
        assert ok
        if index == 0:
            cv2.imwrite(str(photo), frame)
        writer.write(cv2.resize(frame, (960, 620), interpolation=cv2.INTER_AREA))
    capture.release()
    writer.release()
    gallery = tmp_path / "gallery.sqlite"
    common = ["--model", str(shipped_model), "--gallery", str(gallery), "--threads", "2"]
    assert main(["enroll", "--name", "headturn-man", "--largest", str(photo), *common]) == 0
    capsys.readouterr()

    assert main(["identify", str(clip), *common, "--fps", "10", "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out
    visits = [json.loads(line) for line in out.splitlines()]
    assert [v["identity"] for v in visits] == ["headturn-man"], out
