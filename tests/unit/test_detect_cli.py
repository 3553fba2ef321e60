"""`facewatch detect`: what a user sees on the command line."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.cli import main
from engines.images import write_image
from tests.face_folders import messy_folder


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["detect", "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_files_are_reported_and_the_others_still_processed(shared_data, tmp_path, capsys):
    good = [shared_data / "images" / "two_people.jpg", shared_data / "images" / "obama-240p.jpg"]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg \xff\xd9")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    data = good[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    missing = tmp_path / "missing.jpg"
    code, out, err = run_cli(
        capsys,
        "--json",
        str(corrupt),
        str(good[0]),
        str(empty),
        str(truncated),
        str(missing),
        str(good[1]),
    )
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    found = [r for r in records if "faces" in r]
    assert [r["source"] for r in found] == [str(p) for p in good]
    assert [len(r["faces"]) for r in found] == [2, 1]
    failed = [r["source"] for r in records if "error" in r]  # a missing path's first
    assert failed == [str(missing), str(corrupt), str(empty), str(truncated)]
    for bad in (corrupt, empty, truncated, missing):
        assert str(bad) in err
    assert "2 file(s)" in err and "4 error(s)" in err


def test_json_has_an_error_record_for_a_missing_path_and_an_empty_folder(
    shared_data, tmp_path, capsys
) -> None:
    """`detect --json` wrote a {source, error} record for a file it could not read but none
    for a path that was not there (an NFS mount that did not come up) or a folder without
    images: a `jq 'select(.error)'` missed them. identify wrote all three."""
    missing, empty = tmp_path / "gone.jpg", tmp_path / "empty"
    empty.mkdir()
    photo = shared_data / "images" / "obama.jpg"
    code, out, err = run_cli(capsys, "--json", str(missing), str(empty), str(photo))
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    errors = {r["source"]: r["error"] for r in records if "error" in r}
    assert errors == {
        str(missing): f"{missing}: no such file or folder",
        str(empty): errors[str(empty)],
    }
    assert errors[str(empty)].startswith(f"{empty}: folder holds no images or videos")
    assert [r["source"] for r in records if "faces" in r] == [str(photo)]
    assert "2 error(s)" in err


def test_json_record_layout(shared_data, capsys):
    code, out, _ = run_cli(capsys, "--json", str(shared_data / "images" / "obama-240p.jpg"))
    assert code == 0
    record = json.loads(out)
    assert record["frame"] is None and record["time_s"] is None and len(record["image_hw"]) == 2
    face = record["faces"][0]
    assert set(face) == {"bbox_xyxy", "score", "landmarks"}
    assert len(face["bbox_xyxy"]) == 4 and len(face["landmarks"]) == 5 and 0.9 < face["score"] <= 1


def test_folder_and_video_with_annotations(shared_data, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_data / "images" / "multiface.jpg", folder)
    shutil.copy(shared_data / "people" / "hamilton" / "alex-lacamoire.png", folder)
    video = shared_data / "videos" / "hamilton_360p.mp4"
    out_dir = tmp_path / "annotated"
    code, out, err = run_cli(
        capsys,
        "--json",
        "--every",
        "25",
        "--batch",
        "4",
        "--annotate",
        str(out_dir),
        str(folder),
        str(video),
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    frames = [r["frame"] for r in records if r["source"] == str(video)]
    assert frames == list(range(0, 275, 25))
    assert sum(len(r["faces"]) for r in records if r["source"] == str(video)) > 0
    assert (out_dir / "in" / "multiface.jpg").is_file()
    assert (out_dir / "in" / "alex-lacamoire.jpg").is_file()
    annotated = cv2.VideoCapture(str(out_dir / "hamilton_360p.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    assert "3 file(s)" in err


def test_a_recording_with_pauses_gives_each_frames_time_and_plays_at_its_speed(
    tmp_path, capsys
) -> None:
    """A motion-triggered recorder's file: 10 frames/s, with a 30 s pause after 3 s. The
    JSON gave a frame index only (frame / the header's 1.7 frames/s is 18 s off at frame
    30), and the annotated video was written at the header's rate: 6 times too slow. Now
    each record has the frame's own time, the text line says when faces were seen, and the
    annotated video plays at 10 frames/s with the pause cut to 2 s."""
    from tests.clips import DEMO_CLIP, paused_clip, read_frames

    frames = [cv2.resize(f, (320, 180)) for f in read_frames(DEMO_CLIP, count=60, every=4)]
    clip = paused_clip(tmp_path / "motion.mp4", frames, fps=10, pause_after=30, pause_s=30)
    out_dir = tmp_path / "annotated"
    code, out, err = run_cli(capsys, "--json", "--annotate", str(out_dir), str(clip))
    assert code == 0, err
    times = {r["frame"]: r["time_s"] for r in map(json.loads, out.splitlines())}
    assert [times[k] for k in (0, 1, 29, 30, 59)] == [0.0, 0.1, 2.9, 33.0, 35.9]
    annotated = cv2.VideoCapture(str(out_dir / "motion.mp4"))
    assert annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(10, rel=0.01)
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 60 + 20  # frame 29 held 2 s

    code, out, err = run_cli(capsys, str(clip))
    assert code == 0, err
    assert re.fullmatch(
        rf"{clip}: 60 frames, 00:00:00.0-00:00:35.9, \d+ faces seen 00:00:00.\d-00:00:35.\d\n", out
    )


def test_a_recording_cut_short_is_warned_of(tmp_path, capsys) -> None:
    """Only 63 of a damaged recording's 275 frames decode: detect's warning said nothing
    of how much. Now, by the rule identify uses, its line says it was cut short, with a
    warning and a {source, warning} record (exit status 0: a clip cut without re-encoding
    has a header that counts frames no player shows)."""
    from tests.clips import END_LOST, MOSTLY_LOST, damaged_clip

    holed = damaged_clip(tmp_path / "holed.mp4", MOSTLY_LOST)
    code, out, err = run_cli(capsys, "--every", "10", str(holed))
    assert code == 0, err
    assert out.startswith(f"{holed}: 63 frames") and "(cut short: 63 of 275" in out
    assert f"warning: {holed}: cut short: 63 of the 275 frames its header announces" in err
    code, out, err = run_cli(capsys, "--json", "--every", "10", str(holed))
    assert code == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last["source"] == str(holed) and "the rest cannot be read" in last["warning"]

    scratched = damaged_clip(tmp_path / "scratched.mp4", END_LOST)
    code, out, err = run_cli(capsys, "--json", "--every", "10", str(scratched))
    assert code == 0, err
    last = json.loads(out.splitlines()[-1])
    assert (last["frames_decoded"], last["frames_announced"]) == (191, 275)
    assert f"warning: {scratched}: cut short: 191 of the 275 frames" in err


def test_ctrl_c_says_where_it_stopped_and_what_was_done(
    shared_data, tmp_path, monkeypatch, capsys
) -> None:
    """Ctrl-C in a long video said only "interrupted": now the file, the last frame searched
    (and its time), the files done, and the summary."""
    from daemon import detect_cli
    from tests.clips import DEMO_CLIP

    def stopped_in_its_fourth_search(*args, **kwargs):
        detector = load_detector(*args, **kwargs)
        search, calls = detector.detect, []

        def detect(frames):
            calls.append(len(frames))
            if len(calls) == 4:  # the photo's, then two batches of the video's
                raise KeyboardInterrupt
            return search(frames)

        detector.detect = detect
        return detector

    load_detector = detect_cli.load_detector
    monkeypatch.setattr(detect_cli, "load_detector", stopped_in_its_fourth_search)
    photo = shared_data / "images" / "obama.jpg"
    out_dir = tmp_path / "annotated"
    code, out, err = run_cli(capsys, "--json", "--batch", "4", "--annotate", str(out_dir), str(photo), str(DEMO_CLIP), str(photo))  # fmt: skip
    assert code == 130
    assert len(out.splitlines()) == 1 + 8  # the records written are kept
    assert (
        f"interrupted in {DEMO_CLIP} after frame 7 (00:00:00.2): its JSON records and annotated "
        "video end there; 1 of 3 file(s) done\n"
    ) in err
    assert "summary: 1 file(s), 9 image(s)/frame(s), " in err


@pytest.mark.parametrize(
    ("json_out", "annotated", "said"),
    [
        (True, False, ": its JSON records end there"),
        (False, True, ": its annotated video ends there"),
        (True, True, ": its JSON records and annotated video end there"),
        (False, False, ""),
    ],
)
def test_ctrl_c_says_which_outputs_end_there_in_words_that_agree(
    json_out, annotated, said, tmp_path
) -> None:
    """ "its JSON records ends there" was said for --json alone; and an annotated video was
    said to end there when Ctrl-C came before its first frame was written (none was)."""
    from daemon.detect_search import _interrupted, _VideoRun
    from daemon.video_files import TimedWriter

    run = _VideoRun(Path("clip.mp4"), tmp_path / "out.mp4", 30.0)
    assert str(_interrupted(run, False)) == "in clip.mp4 before its first frame was searched"
    run.last_searched = (7, 0.2)
    if annotated:
        run.writer = TimedWriter(run.out, (48, 64, 3), 30.0)
        run.writer.release()
    said_at = "in clip.mp4 after frame 7 (00:00:00.2)"
    assert str(_interrupted(run, json_out)) == said_at + said


def test_annotations_keep_the_inputs_tree_and_a_second_run_replaces_them(
    shared_data, tmp_path, capsys
) -> None:
    """Folders of photos with the same names (the face archive's face-1.jpg...): each
    annotated image lands where its input was, not as face-1-1.jpg, face-1-2.jpg..."""
    visits = tmp_path / "visits"
    for visit in ("a", "b"):
        (visits / visit).mkdir(parents=True)
        shutil.copy(shared_data / "images" / "obama.jpg", visits / visit / "face-1.jpg")
    (visits / "a" / "face-1.png").write_bytes((visits / "a" / "face-1.jpg").read_bytes())
    out_dir = tmp_path / "annotated"
    for _ in range(2):
        code, _, err = run_cli(capsys, "--annotate", str(out_dir), str(visits))
        assert code == 0, err
        written = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
        assert written == [
            "visits/a/face-1-1.jpg",  # face-1.png of the same folder: both kept
            "visits/a/face-1.jpg",
            "visits/b/face-1.jpg",
        ]


def test_a_folder_is_walked_as_enroll_walks_it(shared_data, tmp_path, capsys):
    """detect took a NAS's and a desktop's thumbnails for photos and failed on macOS's ._
    files, left out .jfif photos and symlinked folders unsaid, and called HEIC corrupt."""
    person = messy_folder(shared_data / "images", tmp_path)
    code, out, err = run_cli(capsys, str(person))
    assert code == 0, err  # the HEIC photo is left out, with how to convert it
    taken = [line.split(": ")[0] for line in out.splitlines()]
    assert taken == [str(person / p) for p in ("a.jpg", "album/x.jpg", "download.jfif")]
    assert (
        f"note: {person}: left out 1 file(s) that are not photos or videos by their "
        "extension: notes.txt; left out 1 (IMG_0044.HEIC): HEIC/HEIF photos (an iPhone's "
        "default) are not read: convert them to JPEG (heif-convert" in err
    )
    assert "eaDir" not in out + err and "._a.jpg" not in err
    assert "3 file(s)" in err and " 0 error(s)" in err


def _iphone_folder(images: Path, root: Path, converted: bool) -> Path:
    """Two iPhone photos as HEIC, and (``converted``) the JPEG heif-convert made of each."""
    folder = root / "iphone"
    folder.mkdir()
    for k, name in enumerate(("obama.jpg", "biden.jpg"), 1):
        (folder / f"IMG_000{k}.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(500))
        if converted:
            shutil.copy(images / name, folder / f"IMG_000{k}.JPG")
    return folder


def test_heic_photos_beside_their_converted_jpegs_are_left_out_unsaid(
    shared_data, tmp_path, capsys
):
    """A folder with IMG_1.JPG beside IMG_1.HEIC (what the advice, heif-convert, leaves)
    failed on each HEIC (exit 1) though its JPEG was searched."""
    folder = _iphone_folder(shared_data / "images", tmp_path, converted=True)
    code, out, err = run_cli(capsys, str(folder))
    assert code == 0, err
    assert [line.split(": ")[0] for line in out.splitlines()] == [
        str(folder / "IMG_0001.JPG"),
        str(folder / "IMG_0002.JPG"),
    ]
    assert "HEIC" not in err and "note:" not in err


def test_a_folder_of_heic_photos_holds_no_images_and_says_how_to_convert_them(
    shared_data, tmp_path, capsys
):
    """Each HEIC was an error of its own; the folder's note now says it once, and a HEIC
    named directly still says how to convert it."""
    folder = _iphone_folder(shared_data / "images", tmp_path, converted=False)
    code, out, err = run_cli(capsys, str(folder))
    assert code == 1 and not out
    assert (
        f"note: {folder}: left out 2 (IMG_0001.HEIC, IMG_0002.HEIC): HEIC/HEIF photos (an "
        "iPhone's default) are not read: convert them to JPEG" in err
    )
    assert f"{folder}: folder holds no images or videos" in err
    assert err.count("heif-convert") == 1
    code, out, err = run_cli(capsys, str(folder / "IMG_0001.HEIC"))
    assert code == 1
    assert f"{folder / 'IMG_0001.HEIC'}: HEIC/HEIF photos (an iPhone's default) are not" in err


def test_the_note_names_the_files_left_out_within_the_folder(tmp_path, capsys) -> None:
    """In a tree of visits the note said 'visit.json, visit.json, visit.json, ...'."""
    for day in ("2024-05-01", "2024-05-02"):
        (tmp_path / "visits" / day).mkdir(parents=True)
        (tmp_path / "visits" / day / "visit.json").write_text("{}")
    code, _, err = run_cli(capsys, str(tmp_path / "visits"))
    assert code == 1  # no photos
    assert (
        "left out 2 file(s) that are not photos or videos by their extension: "
        "2024-05-01/visit.json, 2024-05-02/visit.json" in err
    )


def test_a_folder_of_camcorder_phone_and_dvd_videos_is_read(tmp_path, capsys) -> None:
    """An AVCHD camcorder's .MTS, a phone's .3gp, a DVD's .mpg were left out of a folder as
    "not photos" (exit 0, nothing searched); the note now says what detect takes."""
    from tests.clips import DEMO_CLIP

    folder = tmp_path / "footage"
    folder.mkdir()
    names = ["a.MTS", "b.m2ts", "c.mpg", "d.3gp", "e.VOB", "f.wmv"]
    for name in names:  # FFmpeg goes by the content: the demo clip under each name
        shutil.copy(DEMO_CLIP, folder / name)
    (folder / "notes.txt").write_text("tape 3")
    code, out, err = run_cli(capsys, "--every", "100", str(folder))
    assert code == 0, err
    assert [line.split(": ")[0] for line in out.splitlines()] == [str(folder / n) for n in names]
    assert all(": 275 frames (3 searched: every 100)" in line for line in out.splitlines())
    assert f"note: {folder}: left out 1 file(s) that are not photos or videos by their" in err


def test_a_video_named_directly_is_read_whatever_its_name(tmp_path, capsys) -> None:
    """A valid camcorder .MTS named on the command line was called "not a readable image
    (corrupt ...)"; a recorder's own suffix (.dav, .264, none) is tried as a video before
    the file is called unreadable, and a file that is neither says so."""
    from tests.clips import DEMO_CLIP

    named = [tmp_path / "clip.MTS", tmp_path / "ch01_20240105.dav", tmp_path / "export"]
    for path in named:
        shutil.copy(DEMO_CLIP, path)
    junk = tmp_path / "notes.dat"
    junk.write_text("tape 3, camera 2")
    code, out, err = run_cli(capsys, "--every", "100", *map(str, named), str(junk))
    assert code == 1
    lines = out.splitlines()
    assert [line.split(", ")[0] for line in lines] == [f"{p}: 275 frames (3 searched: every 100)" for p in named]  # fmt: skip
    assert f"error: {junk}: not a readable image (corrupt, truncated or unknown format); nor a video that FFmpeg can open" in err  # fmt: skip
    assert "3 file(s)" in err and "1 error(s)" in err


def test_a_file_that_is_not_video_is_an_error(tmp_path, capsys):
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(b"not a video")
    code, _, err = run_cli(capsys, str(fake))
    assert code == 1 and str(fake) in err


def test_ffmpegs_own_messages_stay_out_and_a_cut_off_mp4_is_named(tmp_path) -> None:
    """A recording cut off before its end (its MP4 index, written last, missing): FFmpeg's
    "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not found" came before detect's own
    message, which said only "cannot open as a video". (FFmpeg's log level is set once per
    process, at the first capture: a fresh process.)"""
    from tests.clips import DEMO_CLIP

    data = DEMO_CLIP.read_bytes()
    cut = tmp_path / "recording.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])  # the demo clip's index is at its end
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "detect", "--no-progress", str(cut)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 1
    assert "moov atom" not in result.stderr and " @ 0x" not in result.stderr, result.stderr
    assert (
        f"error: {cut}: cannot open as a video: its index (the MP4 'moov' box) is missing: a "
        "recording cut off or copied before it was finished?"
    ) in result.stderr


def test_json_piped_to_head_ends_quietly(tmp_path) -> None:
    """`facewatch detect --json VIDEO | head`: the reader goes away; detect stops, as a pipe's
    writer does, without "error: [Errno 32] Broken pipe" (taken for the video's failure)."""
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 25, (64, 48))
    for k in range(1500):  # a few frames' records fill the output buffer, many times over
        writer.write(np.full((48, 64, 3), k % 200, np.uint8))
    writer.release()
    command = [sys.executable, "-m", "daemon.cli", "detect", "--json", "--no-progress", str(clip)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        reader.stdout.close()  # before detect's first line: its models are still loading
        err = reader.stderr.read().decode()
        assert reader.wait(timeout=120) == 141
    assert err == "", err


def test_an_interlaced_video_is_an_error_naming_the_file_not_0_faces(tmp_path, capsys):
    """OpenCV's FFmpeg cannot convert interlaced H.264 yet reads it "fine": every frame came
    out black (or one stale picture, with the faces of another video), and detect said
    `0 faces` (or those faces), `0 error(s)`, exit 0. It names the file and the cause; the
    same frames encoded progressive are searched. (OpenCV 5.1 converts it: searched too.)"""
    from tests.clips import DEMO_CLIP, encoded_clip, opencv_reads_interlaced, read_frames

    frames = read_frames(DEMO_CLIP, count=40)
    interlaced = encoded_clip(tmp_path / "interlaced.mp4", frames, interlaced=True)
    code, out, err = run_cli(capsys, "--every", "10", str(interlaced))
    if opencv_reads_interlaced(interlaced):
        assert code == 0, err
        assert int(re.search(r"(\d+) faces", out).group(1)) >= 4, out  # type: ignore[union-attr]
    else:
        assert code == 1, err
        assert f"error: {interlaced}: its 4 frames searched decode " in err
        assert "interlaced video? OpenCV's FFmpeg cannot convert interlaced video" in err
        assert "0 face(s), 1 error(s)" in err  # (a stale picture's faces are not the video's)

    progressive = encoded_clip(tmp_path / "progressive.mp4", frames, interlaced=False)
    code, out, err = run_cli(capsys, "--every", "10", str(progressive))
    assert code == 0, err
    faces = int(re.search(r"(\d+) faces", out).group(1))  # type: ignore[union-attr]
    assert faces >= 4, out


def test_missing_models_are_named(tmp_path, capsys, shared_data):
    code, _, err = run_cli(
        capsys, "--models", str(tmp_path), str(shared_data / "images" / "obama.jpg")
    )
    assert code == 2
    assert str(tmp_path / "pnet") in err


@pytest.mark.parametrize("args", [["--help"], ["detect", "--help"]])
def test_help_explains(args):
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0
    assert "detect" in result.stdout
    if "detect" in args:
        assert "--annotate" in result.stdout and "--min-face-size" in result.stdout


def test_names_opencv_cannot_take_truncated_videos_and_unwritable_output(
    shared_data, tmp_path, capsys
):
    """A video whose name is not UTF-8 once killed the process inside OpenCV; a video cut in
    half passed unremarked; an annotation that could not be written was a silent loss."""
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 240))
    face = cv2.resize(cv2.imread(str(shared_data / "images" / "obama.jpg")), (320, 240))
    for _ in range(60):
        writer.write(face)
    writer.release()
    data = clip.read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    odd = Path(os.fsdecode(bytes(tmp_path / "clip") + b"\xe9.avi"))
    shutil.copy(clip, odd)
    code, out, err = run_cli(capsys, str(tmp_path / "half.avi"), str(odd), str(clip), "--every", "20")  # fmt: skip
    assert code == 1 and f"{clip}: 60 frames (3 searched: every 20)" in out  # the good one
    assert "the file name is not valid UTF-8; rename it" in err
    # a header's frame count is an estimate: far short of it is a warning, not a failure
    assert "warning: " in err and "half.avi: " in err and "of the 60 frames its header" in err
    code, out, _ = run_cli(capsys, "--json", str(odd))
    record = json.loads(out.splitlines()[-1])
    assert code == 1 and "not valid UTF-8" in record["error"]
    assert run_cli(capsys, str(clip), "--annotate", str(clip))[0] == 2  # a file, not a folder
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"afile/x\.jpg: cannot write"):
        write_image(blocker / "x.jpg", face)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        # the config refuses a scale_factor of 0.1 or less: detect took it
        (["--scale-factor", "0.05"], "argument --scale-factor: must be > 0.1 and < 1, got 0.05"),
        # said in the engine's words (min_face_size ...), not the option's
        (["--min-face-size", "5"], "argument --min-face-size: must be >= 12 and <= 1000, got 5"),
        (["--thresholds", "0.6", "0.7", "1"], "argument --thresholds: must be > 0 and < 1, got 1"),
        # in the same words as the rest (it was "--batch and --every must be >= 1, ...")
        (["--batch", "0"], "argument --batch: must be >= 1, got 0"),
        (["--every", "x"], "argument --every: expected an integer, got 'x'"),
        (["--threads", "257"], "argument --threads: must be >= 0 and <= 256, got 257"),
    ],
)
def test_options_out_of_bounds_are_refused_naming_the_option(option, message, capsys) -> None:
    """The config's bounds (detection, engines.threads), each said with the option written."""
    with pytest.raises(SystemExit) as exit_:
        run_cli(capsys, *option, "photo.jpg")
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_arguments_a_user_can_get_wrong_are_named(shared_data, tmp_path, capsys) -> None:
    """Thresholds outside (0, 1) (0 finds thousands of "faces"), an --annotate folder that
    cannot be made, a folder whose files have no image extension: each said, exit 2 / 1."""
    photo = str(shared_data / "images" / "two_people.jpg")
    with pytest.raises(SystemExit) as exit_:
        run_cli(capsys, "--thresholds", "0", "0.7", "0.7", photo)
    assert exit_.value.code == 2
    assert "argument --thresholds: must be > 0 and < 1, got 0" in capsys.readouterr().err
    blocker = tmp_path / "afile"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "--annotate", str(blocker / "out"), photo)
    assert code == 2 and f"--annotate {blocker / 'out'}: cannot create it" in err
    plain = tmp_path / "yale"
    plain.mkdir()
    shutil.copy(photo, plain / "subject01")  # the Yale set names files without extensions
    code, out, err = run_cli(capsys, str(plain), str(plain / "subject01"))
    assert code == 1 and "taken by their extension: " in err and ".jpg" in err
    assert "subject01: 2 faces" in out  # named as a file, it is read


def test_a_crowded_image_lists_its_first_scores_only(shared_data, capsys) -> None:
    # low thresholds: hundreds of candidates survive, as a user trying settings would see
    code, out, _ = run_cli(
        capsys,
        "--thresholds",
        "0.01",
        "0.01",
        "0.01",
        str(shared_data / "images" / "obama-240p.jpg"),
    )
    [line] = out.splitlines()
    shown = line.split("(scores ")[1].split(", ...")[0].split(", ")
    assert code == 0 and len(shown) == 20 and " more)" in line, line
    assert int(line.split(": ")[1].split()[0]) == 20 + int(line.split("... ")[1].split()[0])


def test_every_command_and_option_explains_itself() -> None:
    """`facewatch COMMAND [SUBCOMMAND] --help` of every command (train's too) says what it
    does, every option has a help line, and the help prints (a bare % in it is a traceback)."""
    from daemon.cli import build_parser

    def walk(parser: argparse.ArgumentParser, name: str) -> list[str]:
        bare = [] if parser.description or name == "facewatch" else [f"{name}: no description"]
        parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    bare += walk(sub, f"{name} {sub_name}")
            elif action.option_strings and not action.help:
                bare.append(f"{name} {action.option_strings[-1]}: no help")
        return bare

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"detect", "run", "train", "gallery", "engines"} <= set(commands.choices)
    assert walk(parser, "facewatch") == []


def test_a_label_at_the_frame_edge_is_drawn_whole() -> None:
    """A face at the right or top edge: its name is moved inside the frame, not cut off."""
    import numpy as np

    from daemon.cli_output import put_label

    text = "lin-manuel-miranda 0.15"
    inside = np.zeros((100, 300, 3), np.uint8)
    put_label(inside, text, 20, 50, (0, 255, 0), 1)
    for x, y in ((280, 50), (20, 3), (290, 0)):
        edge = np.zeros((100, 300, 3), np.uint8)
        put_label(edge, text, x, y, (0, 255, 0), 1)
        assert (edge[..., 1] > 0).sum() == (inside[..., 1] > 0).sum(), (x, y)
