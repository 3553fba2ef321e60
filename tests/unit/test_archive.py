"""The face archive: which images of a visit it keeps, what it writes, what it deletes and
how it fails, on faces MTCNN finds in the demo clip."""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from daemon.archive import FaceArchive
from daemon.archive_cli import _moment
from daemon.archive_files import VISIT_FILE, scan_visits
from daemon.cli import main
from daemon.config import ConfigError
from daemon.config_file import load_config, parse_config
from daemon.config_outputs import ArchiveConfig
from daemon.events import face_region, person_key
from daemon.face_quality import MIN_FACE_SCORE, rate_face
from daemon.preflight import check
from daemon.tracks import Track, TrackEvent
from engines.base import EngineError
from engines.boxes import iou_matrix
from tests.conftest import REPO

CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"


@pytest.fixture(scope="module")
def clip_faces(detector) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """(frame, box, landmarks, score) of the largest face in frames of the demo clip."""
    capture = cv2.VideoCapture(str(CLIP))
    found = []
    for k in range(240):
        ok, frame = capture.read()
        if not ok:
            break
        if k % 12:
            continue
        faces = detector.detect([frame])[0]
        if len(faces):
            i = int(np.argmax(faces.bbox_xyxy[:, 2] - faces.bbox_xyxy[:, 0]))
            found.append((frame, faces.bbox_xyxy[i], faces.landmarks[i], float(faces.score[i])))
    capture.release()
    assert len(found) >= 8, "the demo clip shows faces"
    return found


def _archive(tmp_path: Path, **settings) -> FaceArchive:
    return FaceArchive(ArchiveConfig(dir=str(tmp_path / "archive"), **settings), "node", "m-1")


def _visit(
    archive: FaceArchive, faces, first_ts: float, step_s: float, track_id: int = 1, camera="door"
) -> Track:
    """One track seeing ``faces`` (in turn), ``step_s`` apart from ``first_ts``."""
    track = Track(track_id, faces[0][1], faces[0][2], first_ts, first_ts)
    for k, (frame, box, landmarks, score) in enumerate(faces):
        track.bbox_xyxy, track.landmarks = box, landmarks
        track.last_seen = first_ts + k * step_s
        archive.observe(camera, track, frame, (box, landmarks, score), track.last_seen)
    return track


def _left(track: Track, identity: str | None = None) -> TrackEvent:
    """The track's ``left`` event, as the tracker makes it: named by ``identity``."""
    if identity is not None:
        track.announced.add(identity)
    return TrackEvent("left", track, identity, 1.0, 0.4 if identity else None, reason="lost")


def _visits(tmp_path: Path) -> list[Path]:
    """The visit folders of ``_archive(tmp_path)``."""
    return sorted(p.parent for p in (tmp_path / "archive").glob(f"*/*/*/{VISIT_FILE}"))


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_face_quality_prefers_large_frontal_sharp_faces(clip_faces) -> None:
    frame, box, landmarks, score = max(clip_faces, key=lambda f: rate_face(*f).quality)
    quality = rate_face(frame, box, landmarks, score).quality
    assert rate_face(frame, box, landmarks, score).enrollable
    blurred = cv2.GaussianBlur(frame, (0, 0), 3)
    small = cv2.resize(frame, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    turned = landmarks.copy()
    turned[2] = turned[1]  # the nose over the right eye: a face seen from the side
    worse = {
        "blurred": rate_face(blurred, box, landmarks, score).quality,
        "smaller": rate_face(small, box * 0.4, landmarks * 0.4, score).quality,
        "turned": rate_face(frame, box, turned, score).quality,
    }
    assert 0 < quality <= 1
    for why, value in worse.items():
        assert 0 < value < quality, why


def test_a_face_the_detector_scored_low_is_not_enrollable_and_not_a_visits_best(
    tmp_path, clip_faces, capsys
) -> None:
    """The back of a head (detector score 0.701, O-Net's threshold 0.7) and the top of one
    looking down (0.83) were rated by size, pose and blur alone: enrollable, and the visit's
    best image, which enroll took and which then named strangers. A face scored under 0.95
    is now neither."""
    assert MIN_FACE_SCORE == 0.95
    rated = sorted(clip_faces, key=lambda f: rate_face(*f).quality)
    best, other = rated[-1], next(f for f in reversed(rated[:-1]) if rate_face(*f).enrollable)
    assert min(best[3], other[3]) >= MIN_FACE_SCORE, "the clip's faces score high"
    turned_away = (best[0], best[1], best[2], 0.83)
    archive = _archive(tmp_path, per_visit=1, min_gap_s=0.0)
    archive.start()
    now = time.time()
    alone = _visit(archive, [turned_away], now, 1.0, track_id=1)
    both = _visit(archive, [turned_away, other], now, 1.0, track_id=2)
    archive.visits_ended("door", [_left(alone), _left(both)], live=set())
    archive.stop(timeout_s=10)

    kept = {json.loads((v / VISIT_FILE).read_text())["track_id"]: v for v in _visits(tmp_path)}
    [image] = json.loads((kept[1] / VISIT_FILE).read_text())["images"]
    assert image["score"] == 0.83 and image["enrollable"] is False
    [image] = json.loads((kept[2] / VISIT_FILE).read_text())["images"]
    assert image["score"] == round(other[3], 4) and image["enrollable"] is True
    assert image["ts"] == round(now + 1.0, 3)  # the other face's: the turned one went
    assert main(["archive", "list", "--dir", str(tmp_path / "archive")]) == 0
    lines = capsys.readouterr().out.splitlines()[:2]
    counts = {line.split("-")[-2]: line.split("  ")[3] for line in lines}  # by track
    assert counts == {"t1": "1 image(s), 0 enrollable", "t2": "1 image(s), 1 enrollable"}


def test_a_visit_keeps_its_best_images_spaced_in_time_and_is_written_when_it_left(
    tmp_path, clip_faces, detector
) -> None:
    archive = _archive(tmp_path, per_visit=3, min_gap_s=1.0)
    archive.start()
    first = time.time() - 60
    track = _visit(archive, clip_faces[:10], first, 0.5)
    archive.visits_ended("door", [_left(track)], live=set())
    archive.stop(timeout_s=10)

    [folder] = _visits(tmp_path)
    start = datetime.fromtimestamp(first)
    assert folder.relative_to(tmp_path / "archive").parts == (
        start.strftime("%Y-%m-%d"),
        "door",
        start.strftime("%H%M%S") + "-t1-unknown",
    )
    about = json.loads((folder / VISIT_FILE).read_text())
    assert about["camera"] == "door" and about["track_id"] == 1 and about["node"] == "node"
    assert about["identity"] is None and about["reason"] == "lost" and about["model"] == "m-1"
    assert about["frame_hw"] == list(clip_faces[0][0].shape[:2])
    assert about["first_seen_ts"] == round(first, 3)
    assert about["last_seen_ts"] == round(first + 4.5, 3)
    # the best of each second of the visit (frames 0-1, 2-3, ... of the ten), then the best 3
    qualities = [rate_face(*face).quality for face in clip_faces[:10]]
    windows = [max((qualities[k], first + k * 0.5) for k in (2 * w, 2 * w + 1)) for w in range(5)]
    best = sorted(sorted(windows, reverse=True)[:3], key=lambda c: c[1])
    images = about["images"]
    assert [image["ts"] for image in images] == [round(ts, 3) for _, ts in best]
    assert [image["quality"] for image in images] == pytest.approx([q for q, _ in best], abs=1e-4)
    assert [image["file"] for image in images] == ["face-1.jpg", "face-2.jpg", "face-3.jpg"]
    for image in images:
        picture = cv2.imread(str(folder / image["file"]))
        assert picture is not None and max(picture.shape[:2]) <= 400
        assert (folder / image["file"]).stat().st_mode & 0o777 == 0o600
        # the face is found again where visit.json says (what enroll takes)
        again = detector.detect([picture])[0].bbox_xyxy
        overlap = iou_matrix(np.array([image["face_xyxy"]]), again)
        assert overlap.size and overlap.max() > 0.7, image
        assert isinstance(image["enrollable"], bool)
    for path in (tmp_path / "archive", folder.parent.parent, folder.parent, folder):
        assert path.stat().st_mode & 0o777 == 0o700, path


@pytest.mark.parametrize("which", ["unknown", "all"])
def test_which_visits_are_kept(tmp_path, clip_faces, which) -> None:
    archive = _archive(tmp_path, which=which)
    archive.start()
    now = time.time()
    known = _visit(archive, clip_faces[:3], now, 1.0, track_id=1)
    unknown = _visit(archive, clip_faces[3:6], now, 1.0, track_id=2)
    archive.visits_ended("door", [_left(known, "Zoë"), _left(unknown)], live=set())
    archive.stop(timeout_s=10)

    kept = {json.loads((v / VISIT_FILE).read_text())["track_id"]: v for v in _visits(tmp_path)}
    assert sorted(kept) == ([1, 2] if which == "all" else [2])
    if which == "all":
        assert kept[1].name.endswith("-t1-" + person_key("Zoë"))
        assert json.loads((kept[1] / VISIT_FILE).read_text())["identity"] == "Zoë"


def test_an_unknown_only_archive_holds_no_images_of_a_face_once_named(tmp_path, clip_faces) -> None:
    """With `which: unknown` (the default) a named visit is never written: its faces were
    still rated and encoded on the engine thread, and held until it left."""
    archive = _archive(tmp_path, which="unknown")
    track = _visit(archive, clip_faces[:2], time.time(), 1.0)
    assert archive._open
    track.announced.add("Zoë")  # confirmed as Zoë
    for frame, box, landmarks, score in clip_faces[2:4]:
        archive.observe("door", track, frame, (box, landmarks, score), time.time() + 5)
    assert archive._open == {}


def test_a_track_gone_before_it_was_confirmed_leaves_nothing(tmp_path, clip_faces) -> None:
    archive = _archive(tmp_path)
    archive.start()
    brief = _visit(archive, clip_faces[:2], time.time(), 1.0, track_id=7)
    stays = _visit(archive, clip_faces[2:4], time.time(), 1.0, track_id=8)
    archive.visits_ended("door", [], live={8})  # 7 expired unconfirmed: no `left`
    archive.visits_ended("door", [_left(brief), _left(stays)], live=set())
    archive.stop(timeout_s=10)
    assert [v.name.split("-")[1] for v in _visits(tmp_path)] == ["t8"]


def _old_visit(root: Path, day: str, name: str, size: int) -> Path:
    """A visit folder as a previous run left it (its start is in its path)."""
    folder = root / day / "door" / name
    folder.mkdir(parents=True)
    (folder / "face-1.jpg").write_bytes(b"\xff" * size)
    (folder / VISIT_FILE).write_text("{}")
    return folder


def _disk(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in [folder, *folder.iterdir()])


def test_old_visits_and_the_oldest_beyond_the_size_limit_are_deleted(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="daemon.archive")
    pruned = {r: _sample("facewatch_archive_pruned_total", reason=r) for r in ("age", "size")}
    root = tmp_path / "archive"
    expired = _old_visit(root, "2026-01-02", "080000-t1-unknown", 1000)
    day = datetime.fromtimestamp(time.time() - 3 * 3600).strftime("%Y-%m-%d")
    oldest = _old_visit(root, day, "000000-t1-unknown", 400_000)
    kept = [_old_visit(root, day, f"00000{k}-t{k}-unknown", 400_000) for k in (1, 2)]
    mine = root / "2026-01-01" / "my faces" / "080000-t1-unknown"  # not in a camera's folder:
    mine.mkdir(parents=True)  # the user's own, never touched
    (mine / "bob.jpg").write_bytes(b"\xff")
    (mine / VISIT_FILE).write_text("{}")
    (root / ".tmp-cut-short").mkdir()  # a write the last run did not finish
    archive = _archive(tmp_path, max_mb=2 * _disk(kept[0]) / 1e6, keep_days=7)
    archive.start()
    archive.stop(timeout_s=10)
    assert not expired.parent.parent.exists(), "started before keep_days, with its empty day"
    assert not oldest.exists(), "beyond max_mb, oldest first"
    assert all(folder.exists() for folder in kept) and (mine / "bob.jpg").exists()
    assert not (root / ".tmp-cut-short").exists()
    assert _sample("facewatch_archive_bytes") == sum(_disk(folder) for folder in kept)
    assert _sample("facewatch_archive_pruned_total", reason="age") == pruned["age"] + 1
    assert _sample("facewatch_archive_pruned_total", reason="size") == pruned["size"] + 1
    assert "deleted 1 visit(s) older than keep_days 7 and 1 to stay within max_mb" in caplog.text


def test_archive_prune_applies_keep_days_and_max_mb_where_no_daemon_runs(tmp_path, capsys) -> None:  # fmt: skip
    """Retention ran only inside a running daemon with the archive on: stopped, or with
    archive.dir set back to null, its strangers' visits stayed for good. `archive prune`
    applies the config's limits once (a timer's job), as the daemon would, leaves what is
    not a visit (and a write in progress) alone, and deletes nothing while a daemon holds
    the archive's lock: that daemon prunes it itself."""
    root = tmp_path / "archive"
    expired = _old_visit(root, "2026-01-02", "080000-t1-unknown", 1000)
    day = datetime.fromtimestamp(time.time() - 3 * 3600).strftime("%Y-%m-%d")
    oldest = _old_visit(root, day, "000000-t1-unknown", 400_000)
    kept = [_old_visit(root, day, f"00000{k}-t{k}-unknown", 400_000) for k in (1, 2)]
    mine = root / "2026-01-01" / "my faces" / "080000-t1-unknown"  # the user's own
    mine.mkdir(parents=True)
    (mine / VISIT_FILE).write_text("{}")
    (root / ".tmp-being-written").mkdir()
    config = tmp_path / "facewatch.yaml"
    settings = {"dir": str(root), "keep_days": 7, "max_mb": 2 * _disk(kept[0]) / 1e6}
    config.write_text(json.dumps({"cameras": [{"name": "door", "url": str(CLIP)}],
                                  "archive": settings}))  # fmt: skip
    held = os.open(root / "archive.lock", os.O_RDWR | os.O_CREAT, 0o600)  # a running daemon's
    try:
        os.write(held, b"4242")
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["archive", "prune", "--config", str(config)]) == 0
        assert "the running daemon (pid 4242) prunes it itself" in capsys.readouterr().out
        assert expired.exists() and oldest.exists()
    finally:
        os.close(held)
    assert main(["archive", "prune", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"deleted {expired} (started over keep_days 7 ago)" in out
    assert f"deleted {oldest} (oldest beyond max_mb" in out
    assert "deleted 1 visit(s) older than keep_days 7 and 1 to stay within max_mb" in out
    assert f"2 visit(s), {sum(map(_disk, kept)) / 1e6:.1f} MB left in {root}" in out
    assert not expired.parent.parent.exists() and not oldest.exists()
    assert all(folder.exists() for folder in kept) and mine.exists()
    assert (root / ".tmp-being-written").exists()
    # the archive turned off: its folder is given, and the limits
    config.write_text(json.dumps({"cameras": [{"name": "door", "url": str(CLIP)}]}))
    assert main(["archive", "prune", "--config", str(config)]) == 2
    assert "archive.dir is not set (the archive is off)" in capsys.readouterr().err
    assert main(["archive", "prune", "--dir", str(root), "--keep-days", "0.0001"]) == 0
    assert "deleted 2 visit(s) older than keep_days 0.0001" in capsys.readouterr().out
    assert not any(folder.exists() for folder in kept) and mine.exists()
    assert main(["archive", "prune", "--dir", str(tmp_path / "nothing")]) == 2


def test_visits_written_before_the_clock_was_set_are_kept_keep_days(tmp_path, clip_faces) -> None:
    """A board without a real-time clock boots years behind; NTP sets it right minutes
    later. The visits written meanwhile carry the old clock's times: they were deleted as
    older than keep_days at the next prune. This run's visits are aged by the monotonic
    clock; an earlier run's, on disk, by their times."""
    root = tmp_path / "archive"
    earlier = _old_visit(root, "2023-01-02", "080000-t1-unknown", 1000)  # an earlier run's
    archive = _archive(tmp_path, keep_days=7)
    archive.start()
    before_sync = time.time() - 3 * 365 * 86400
    track = _visit(archive, clip_faces[:4], before_sync, 0.5)
    archive.visits_ended("door", [_left(track)], live=set())
    after_sync = _visit(archive, clip_faces[4:8], time.time(), 0.5, track_id=2)
    archive.visits_ended("door", [_left(after_sync)], live=set())
    archive.stop(timeout_s=10)
    assert len(_visits(tmp_path)) == 2, "both of this run's visits are kept"
    assert not earlier.exists(), "an earlier run's visit of 2023 is past keep_days"


def test_a_visits_start_is_read_from_its_visit_json(tmp_path) -> None:
    """Exact where the folder's local time is not (the hour a clock goes back)."""
    root = tmp_path / "archive"
    named_old = _old_visit(root, "2026-01-02", "080000-t1-unknown", 1000)
    (named_old / VISIT_FILE).write_text(json.dumps({"first_seen_ts": time.time() - 3600}))
    archive = _archive(tmp_path, keep_days=7)
    archive.start()
    archive.stop(timeout_s=10)
    assert named_old.exists(), "it started an hour ago, whatever its folder says"


# visit.json contents the writer never makes (a damaged disk, a hand edit)
DAMAGED_VISITS = [
    b'{"first_seen_ts": 1' + b"0" * 400 + b"}",
    b'{"first_seen_ts": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    b'{"first_seen_ts": "nan"}',
    b'{"first_seen_ts": NaN}',
    b'{"first_seen_ts": -Infinity}',
    b'{"first_seen_ts": 1e300}',
    b'{"first_seen_ts": 1.5, "last_seen_ts": "x"}',
    b'{"first_seen_ts": 1.5, "images": 5}',
    b'{"first_seen_ts": 1.5, "camera": "caf\xe9"}',
    b"[]",
]


def test_damaged_visit_files_are_dated_by_their_folder_and_retention_goes_on(tmp_path) -> None:
    """A 400-digit or deeply nested first_seen_ts stopped every scan (OverflowError,
    RecursionError: nothing was deleted any more, the disk filled); "nan" was a start time
    that broke the oldest-first order. Now such a visit.json is unreadable and the visit
    is dated by its folder's name, as one without a visit.json is."""
    root = tmp_path / "archive"
    damaged = [
        _old_visit(root, "2026-01-02", f"0800{k:02d}-t{k}-unknown", 1000)
        for k in range(len(DAMAGED_VISITS))
    ]
    for folder, content in zip(damaged, DAMAGED_VISITS, strict=True):
        (folder / VISIT_FILE).write_bytes(content)
    day = datetime.fromtimestamp(time.time() - 3600).strftime("%Y-%m-%d")
    recent = _old_visit(root, day, "000000-t99-unknown", 1000)
    (recent / VISIT_FILE).write_text(json.dumps({"first_seen_ts": time.time() - 60}))
    folder_times = [time.mktime(time.strptime(f"2026-01-02 0800{k:02d}", "%Y-%m-%d %H%M%S"))
                    for k in range(len(damaged))]  # fmt: skip
    found = scan_visits(root)
    assert [folder for _, folder, _ in found] == [*damaged, recent], "oldest first"
    assert [start for start, _, _ in found][:-1] == folder_times
    archive = _archive(tmp_path, keep_days=7)
    archive.start()
    archive.stop(timeout_s=10)
    assert not any(folder.exists() for folder in damaged) and recent.exists()


def test_archive_list_skips_damaged_visit_files_and_says_which(tmp_path, capsys) -> None:
    root = tmp_path / "archive"
    for k, content in enumerate(DAMAGED_VISITS):
        folder = _old_visit(root, "2026-01-02", f"0800{k:02d}-t{k}-unknown", 10)
        (folder / VISIT_FILE).write_bytes(content)
    good = _old_visit(root, "2026-01-02", "090000-t99-unknown", 10)
    (good / VISIT_FILE).write_text(json.dumps({"first_seen_ts": time.time() - 60}))
    assert main(["archive", "list", "--dir", str(root)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].endswith(str(good)) and len(out.splitlines()) == 1
    assert err.count("skipped ") == len(DAMAGED_VISITS) and "1 of the 1 visit(s)" in err
    assert "first_seen_ts 100000" in err and "is not a time" in err and "nested too deeply" in err


def test_the_size_follows_hand_deletions_once_a_minute_on_a_busy_camera(
    tmp_path, clip_faces
) -> None:
    archive = _archive(tmp_path)
    archive.start()
    tracks = [_visit(archive, clip_faces[:1], time.time(), 1.0, track_id=k) for k in (1, 2)]
    archive.visits_ended("door", [_left(tracks[0])], live={2})
    archive.stop(timeout_s=10)  # the first visit written
    [first] = _visits(tmp_path)
    archive = _archive(tmp_path)
    archive.start()
    deadline = time.monotonic() + 10
    while _sample("facewatch_archive_bytes") != _disk(first):
        assert time.monotonic() < deadline, "measured at start"
        time.sleep(0.02)
    shutil.rmtree(first)  # by hand
    archive._refreshed -= 61  # a minute later, a visit is written
    track = _visit(archive, clip_faces[:1], time.time(), 1.0, track_id=3)
    archive.visits_ended("door", [_left(track)], live=set())
    archive.stop(timeout_s=10)
    [second] = _visits(tmp_path)
    assert _sample("facewatch_archive_bytes") == _disk(second)


def test_visits_deleted_by_hand_no_longer_count(tmp_path, clip_faces) -> None:
    root = tmp_path / "archive"
    day = datetime.fromtimestamp(time.time() - 3600).strftime("%Y-%m-%d")
    old = [_old_visit(root, day, f"00000{k}-t{k}-unknown", 100_000) for k in range(3)]
    full = sum(_disk(folder) for folder in old)
    archive = _archive(tmp_path, max_mb=(full + 1000) / 1e6)  # room for these three only
    archive.start()
    deadline = time.monotonic() + 10
    while _sample("facewatch_archive_bytes") != full:  # the writer has looked
        assert time.monotonic() < deadline, "the archive's size is measured at start"
        time.sleep(0.02)
    for folder in old[1:]:
        shutil.rmtree(folder)  # reviewed and deleted by the user
    track = _visit(archive, clip_faces[:2], time.time(), 1.0, track_id=9)
    archive.visits_ended("door", [_left(track)], live=set())
    archive.stop(timeout_s=10)
    assert old[0].exists(), "room enough for it and the new visit"
    assert len(_visits(tmp_path)) == 2


def test_a_visit_that_cannot_be_written_is_counted_and_the_next_one_is(
    tmp_path, clip_faces, caplog
) -> None:
    archive = _archive(tmp_path)
    FaceArchive.prepare(str(tmp_path / "archive"))
    now = time.time()
    day = tmp_path / "archive" / datetime.fromtimestamp(now).strftime("%Y-%m-%d")
    day.write_text("not a folder")  # the disk refuses the visit's folder
    errors = _sample("facewatch_archive_failures_total", reason="error")
    archive.start()
    first = _visit(archive, clip_faces[:2], now, 1.0, track_id=1)
    archive.visits_ended("door", [_left(first)], live=set())
    deadline = time.monotonic() + 10
    while _sample("facewatch_archive_failures_total", reason="error") == errors:
        assert time.monotonic() < deadline, "the failure is counted"
        time.sleep(0.05)
    assert _sample("facewatch_archive_failing") == 1, "facewatch status says so"
    day.unlink()
    second = _visit(archive, clip_faces[2:4], now, 1.0, track_id=2)
    with caplog.at_level("INFO", logger="daemon.archive"):
        archive.visits_ended("door", [_left(second)], live=set())
        archive.stop(timeout_s=10)
    assert [v.name.split("-")[1] for v in _visits(tmp_path)] == ["t2"]
    assert _sample("facewatch_archive_failing") == 0
    assert (
        f"face archive: writes visits to {tmp_path / 'archive'} again (1 visit(s) not "
        "written meanwhile)"
    ) in caplog.text
    assert not list((tmp_path / "archive").glob(".tmp-*")), "nothing half-written is left"
    assert "face archive: a visit not written" in caplog.text


def test_visits_beyond_what_the_writer_can_hold_are_dropped_and_counted(
    tmp_path, clip_faces, monkeypatch, caplog
) -> None:
    import daemon.archive as archive_module

    archive = _archive(tmp_path)
    behind = _sample("facewatch_archive_failures_total", reason="behind")
    tracks = [_visit(archive, clip_faces[:1], time.time(), 1.0, track_id=k) for k in (1, 2, 3)]
    one_visit = len(archive._open[("door", 1)].images[0].jpeg)
    monkeypatch.setattr(archive_module, "QUEUE_BYTES", int(2.5 * one_visit))
    archive.visits_ended("door", [_left(t) for t in tracks], live=set())  # writer not started
    assert _sample("facewatch_archive_failures_total", reason="behind") == behind + 1
    assert "visits dropped: waiting already: the disk is too slow" in caplog.text
    archive.start()
    archive.finish()
    late = _visit(archive, clip_faces[:1], time.time(), 1.0, track_id=4)
    archive.visits_ended("door", [_left(late)], live=set())  # a scheduler late to stop
    assert _sample("facewatch_archive_failures_total", reason="behind") == behind + 2
    assert "visits dropped: ended after the stop began" in caplog.text
    archive.join(timeout_s=10)
    assert [v.name.split("-")[1] for v in _visits(tmp_path)] == ["t1", "t2"]


def test_a_face_outside_the_frame_gives_an_empty_crop_not_another_part() -> None:
    frame = np.zeros((360, 640, 3), np.uint8)
    for box in ([-90, 100, -50, 140], [650, 100, 700, 140], [10, -80, 50, -40]):
        assert face_region(frame, np.array(box, float), 0.0).size == 0, box
    assert face_region(frame, np.array([-20, 100, 20, 140], float), 0.0).shape == (40, 20, 3)


def test_archive_settings_are_checked(tmp_path) -> None:
    camera = {"name": "door", "url": str(CLIP)}
    with pytest.raises(ConfigError, match=r"archive\.which"):
        parse_config({"cameras": [camera], "archive": {"which": "strangers"}})
    with pytest.raises(ConfigError, match=r"archive\.dir: .*null turns the archive off"):
        parse_config({"cameras": [camera], "archive": {"dir": " "}})  # e.g. an empty ${VAR}
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    FaceArchive.prepare(str(shared))
    assert shared.stat().st_mode & 0o777 == 0o700, "made owner-only"
    config_file = tmp_path / "facewatch.yaml"
    config_file.write_text(json.dumps({"cameras": [camera], "archive": {"dir": "faces"}}))
    assert load_config(config_file).archive.dir == str(tmp_path / "faces")
    (tmp_path / "file").write_text("")
    for folder, why in [
        ("file", "a file, not a folder"),
        ("file/x", "cannot be created: .*file is a file"),
    ]:
        config = parse_config({"cameras": [camera], "archive": {"dir": str(tmp_path / folder)}})
        with pytest.raises(ConfigError, match=rf"archive\.dir: .*{folder}: {why}"):
            check(config)


def test_archive_list_shows_the_visits_asked_for(tmp_path, clip_faces, capsys) -> None:
    archive = _archive(tmp_path, which="all")
    archive.start()
    before, now = time.time() - 2 * 86400, time.time()
    for track_id, camera, start, who in [
        (1, "door", before, None),
        (2, "gate", now - 10, "Zoë"),
        (3, "door", now - 5, None),
        (4, "gate", now - 3, None),
    ]:
        track = _visit(archive, clip_faces[:2], start, 1.0, track_id, camera)
        if track_id == 4:
            track.announced.add("Bob")  # identified as Bob, then changed to unknown
        archive.visits_ended(camera, [_left(track, who)], live=set())
    archive.stop(timeout_s=10)
    root = tmp_path / "archive"

    def listed(*options: str) -> list[str]:
        assert main(["archive", "list", "--dir", str(root), *options]) == 0
        return capsys.readouterr().out.splitlines()

    lines = listed()
    assert [line.split("  ")[1:3] for line in lines] == [
        ["door", "unknown"],
        ["gate", "Zoë"],
        ["door", "unknown"],
        ["gate", "unknown (before: Bob)"],
    ]
    assert all(line.split("  ")[3].startswith("2 image(s), ") for line in lines)
    assert "enrollable" in lines[0]
    assert lines[0].startswith(datetime.fromtimestamp(before).strftime("%Y-%m-%d %H:%M:%S"))
    assert all(Path(line.split("  ")[-1]).is_dir() for line in lines), "the folder, for enroll"
    assert len(listed("--camera", "door")) == 2
    assert len(listed("--unknown")) == 2, "not the visit once named Bob"
    assert [line.split("  ")[2] for line in listed("--name", "Zoë")] == ["Zoë"]
    nfd = unicodedata.normalize("NFD", " Zoë ")  # as typed on a Mac, spaces around
    assert [line.split("  ")[2] for line in listed("--name", nfd)] == ["Zoë"]
    assert [line.split("  ")[2] for line in listed("--name", "Bob")] == ["unknown (before: Bob)"]
    since = datetime.fromtimestamp(now - 10).strftime("%Y-%m-%d")
    assert [line.split("  ")[1] for line in listed("--since", since)] == ["gate", "door", "gate"]
    later = datetime.fromtimestamp(now - 6).isoformat(sep=" ", timespec="seconds")
    assert [line.split("  ")[1] for line in listed("--since", later)] == ["door", "gate"]
    assert main(["archive", "list", "--dir", str(root), "--camera", "Door"]) == 0
    err = capsys.readouterr().err
    assert "0 of the 4 visit(s) in" in err and "cameras in the archive: door, gate" in err
    # in any case (the gallery has no two people whose names differ in case only)
    assert [line.split("  ")[2] for line in listed("--name", "ZOË")] == ["Zoë"]
    assert main(["archive", "list", "--dir", str(root), "--name", "Zoe"]) == 0
    assert "names in the archive: Bob, Zoë" in capsys.readouterr().err
    one_too_deep = next(root.iterdir())  # a day's folder
    assert main(["archive", "list", "--dir", str(one_too_deep)]) == 2
    assert "a day folder of the face archive" in capsys.readouterr().err
    [as_json] = listed("--json", "--name", "Zoë")
    visit = json.loads(as_json)
    assert visit["track_id"] == 2 and Path(visit["folder"]).is_dir()
    door = Path(listed("--camera", "door", "--since", since)[0].split("  ")[-1])
    (door / "face-2.jpg").unlink()  # deleted by hand: visit.json still lists it
    [line] = listed("--camera", "door", "--since", since)
    assert line.split("  ")[3].startswith("1 image(s) (1 missing), "), line


def test_a_second_daemon_given_the_same_archive_dir_is_refused_and_archive_list_still_runs(
    tmp_path, monkeypatch, capsys
) -> None:
    """Two daemons given one archive.dir (a copied config) deleted each other's visits by
    their own keep_days and max_mb, without a word. The first holds the folder while it
    runs: a second is refused at start, before its engines load, with exit status 1 (systemd
    tries again) naming archive.dir and the first one's pid. `archive list` reads the
    visits all the same, and once the first has stopped the second starts."""
    from daemon import engine_choice

    root = tmp_path / "archive"
    _named_visit(root, "door", "080000-t1-unknown", [], b"\xff")
    holder = subprocess.Popen(  # the first daemon: another process, holding archive.dir
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from daemon.claims import claim; claim(Path(sys.argv[1]), 'archive.dir'); "
         "print('held', flush=True); sys.stdin.read()", str(root / "archive.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    loads: list[str] = []

    def load_detector(*args: object, **kwargs: object) -> None:
        loads.append("detector")
        raise EngineError("models/mtcnn/pnet.onnx: cannot load the model: (this test's)")

    monkeypatch.setattr(engine_choice, "load_detector", load_detector)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = tmp_path / "facewatch.yaml"
    config.write_text(
        json.dumps(
            {
                "cameras": [{"name": "door", "url": str(CLIP)}],
                "recognition": {"model": None},
                "mqtt": {"enabled": False},
                "metrics": {"enabled": False},
                "archive": {"dir": str(root), "which": "all"},
            }
        )
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert main(["run", "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert f"error: archive.dir: {root}: in use by another facewatch (pid {holder.pid}) " \
            "with the same archive.dir (exit status 1: systemd starts facewatch again; it " \
            "runs once the other has stopped)" in err, err  # fmt: skip
        assert loads == [], "refused before the engines load"
        assert main(["archive", "list", "--config", str(config)]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 1
    finally:
        holder.communicate("")  # the first daemon stops
    assert main(["run", "--config", str(config)]) == 2  # (this test's engine error)
    assert loads == ["detector"], "started once the first stopped"
    assert "in use by another facewatch" not in capsys.readouterr().err


def test_archive_prune_and_a_daemon_starting_on_the_archive_at_one_moment(
    tmp_path, capsys, monkeypatch
) -> None:
    """`archive prune` run as a daemon starts on the same archive: a daemon that had
    locked archive.lock but not written its pid yet was 'the running daemon (pid ?)' (the
    pid read twice, once too soon), and a daemon starting while a prune held the lock was
    refused, 'in use by another facewatch (pid N)', N the prune's, exit status 1 (3 times in
    30 of a loop of starts and prunes). Now prune waits the moment for the pid, and a
    daemon (or another prune) waits for a prune, which says what it is in the lock."""
    import threading

    from daemon import archive_prune, claims, preflight
    from daemon.claims import claim

    monkeypatch.setattr(claims, "PID_WAIT_S", 0.3)
    root = tmp_path / "archive"
    visit = _old_visit(root, "2026-01-02", "080000-t1-unknown", 1000)
    config = tmp_path / "facewatch.yaml"
    config.write_text(
        json.dumps({"cameras": [{"name": "door", "url": str(CLIP)}], "archive": {"dir": str(root)}})
    )
    prune = ["archive", "prune", "--config", str(config), "--keep-days", "1"]
    lock = root / "archive.lock"
    for written in (True, False):  # a daemon starting: locked, its pid written a moment later
        held = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if written:
            threading.Timer(0.1, os.write, (held, str(os.getpid()).encode())).start()
        try:
            assert main(prune) == 0
        finally:
            os.close(held)
        out = capsys.readouterr().out
        daemon = f"the running daemon (pid {os.getpid()})" if written else "a facewatch daemon"
        assert f"{root}: {daemon} prunes it itself, by its config's keep_days and max_mb; " \
            "nothing was deleted (it holds archive.lock while it runs; to prune by other " \
            "limits, stop it and run this again)" in out, out  # fmt: skip
        assert "pid ?" not in out and visit.exists()

    settings = load_config(str(config))
    pruning = claim(lock, "archive.dir", "archive prune")  # a prune, done in 0.2 s
    assert lock.read_text() == f"{os.getpid()} archive prune"
    threading.Timer(0.2, os.close, (pruning,)).start()
    started = time.monotonic()
    with preflight.outputs_claimed(settings):  # the daemon waits for it
        assert 0.15 < time.monotonic() - started < 5 and lock.read_text() == str(os.getpid())
    monkeypatch.setattr(preflight, "PRUNE_WAIT_S", 0.2)
    monkeypatch.setattr(archive_prune, "PRUNE_WAIT_S", 0.2)
    pruning = claim(lock, "archive.dir", "archive prune")  # one that takes long
    try:
        with pytest.raises(OSError) as refused, preflight.outputs_claimed(settings):
            pass
        assert f"in use by another facewatch (pid {os.getpid()}, `facewatch archive prune`) " \
            "with the same archive.dir" in str(refused.value)  # fmt: skip
        assert main(prune) == 0
        out, err = capsys.readouterr()
        assert f"{root}: another `facewatch archive prune` (pid {os.getpid()}) has been at it " \
            "for 0.2 s; nothing was deleted by this one" in out  # fmt: skip
        assert (
            f"note: archive.dir {root}: held by `facewatch archive prune` (pid "
            f"{os.getpid()}): waiting for it, up to 0.2 s" in err
        )  # fmt: skip (it waited silently)
    finally:
        os.close(pruning)
    assert main(prune) == 0 and not visit.exists()


def test_archive_list_says_when_the_config_has_no_archive(tmp_path, capsys, monkeypatch) -> None:
    config = tmp_path / "facewatch.yaml"
    config.write_text(json.dumps({"cameras": [{"name": "door", "url": str(CLIP)}]}))
    assert main(["archive", "list", "--config", str(config)]) == 2
    assert "archive.dir is not set" in capsys.readouterr().err
    monkeypatch.setenv("FACEWATCH_CONFIG", str(config))  # the running daemon's, by default
    assert main(["archive", "list"]) == 2
    assert f"error: {config}: archive.dir is not set" in capsys.readouterr().err
    config.write_text(json.dumps({"cameras": [{"name": "door", "url": str(CLIP)}],
                                  "archive": {"dir": "faces"}}))  # fmt: skip
    assert main(["archive", "list", "--config", str(config)]) == 0
    assert "no visits yet" in capsys.readouterr().err
    assert main(["archive", "list", "--dir", str(config)]) == 2  # a mistyped --dir
    assert f"{config}: a file, not the archive's folder" in capsys.readouterr().err
    # --dir that is not there: a typo (it said "no visits yet" and exited 0)
    assert main(["archive", "list", "--dir", str(tmp_path / "face")]) == 2
    assert f"error: --dir {tmp_path / 'face'}: no such folder" in capsys.readouterr().err
    (tmp_path / "faces").mkdir()
    assert main(["archive", "list", "--config", str(config), "--name", "Bob"]) == 0
    assert "archive.which is unknown: visits in which someone was named are not kept" in (
        capsys.readouterr().err
    )


def test_archive_list_track_finds_the_visit_of_an_unknown_event(tmp_path, capsys) -> None:
    """An `unknown` event says camera, track_id and first_seen_ts: `archive list --camera C
    --track N` gives its visit's folder (only `--json` and jq could), also an earlier run's
    track N (ids restart with the daemon), which `--since` leaves out."""
    root = tmp_path / "archive"
    visits = {}
    for day, camera, name, track, ts in [
        ("2026-11-29", "door", "101500-t5-unknown", 5, 1.7804e9),  # an earlier run's t5
        ("2026-12-01", "door", "144036-t5-unknown", 5, 1.7806e9),
        ("2026-12-01", "gate", "144037-t5-unknown", 5, 1.7806e9 + 1),
        ("2026-12-01", "door", "144040-t6-unknown", 6, 1.7806e9 + 4),
    ]:
        folder = visits[name] = root / day / camera / name
        folder.mkdir(parents=True)
        about = {"camera": camera, "track_id": track, "first_seen_ts": ts, "identity": None}
        (folder / VISIT_FILE).write_text(json.dumps(about))

    def listed(*options: str) -> list[str]:
        assert main(["archive", "list", "--dir", str(root), *options]) == 0
        return [line.split("  ")[-1] for line in capsys.readouterr().out.splitlines()]

    assert listed("--camera", "door", "--track", "5") == [
        str(visits["101500-t5-unknown"]),
        str(visits["144036-t5-unknown"]),
    ]
    since = datetime.fromtimestamp(1.7806e9).strftime("%Y-%m-%d")
    assert listed("--camera", "door", "--track", "5", "--since", since) == [
        str(visits["144036-t5-unknown"])
    ]
    assert main(["archive", "list", "--dir", str(root), "--camera", "door", "--track", "7"]) == 0
    assert "a track's visit is written once it has left" in capsys.readouterr().err
    assert main(["archive", "list", "--dir", str(root), "--track", "5"]) == 2
    assert "--track needs --camera" in capsys.readouterr().err


def test_archive_list_ends_with_the_enroll_command_that_takes_its_folders(
    tmp_path, clip_faces, capsys
) -> None:
    """The visits listed, the last line says how to enroll from them, with the config given
    (it ended at the count: the command was only in `archive list --help`)."""
    archive = _archive(tmp_path)
    archive.start()
    track = _visit(archive, clip_faces[:2], time.time() - 60, 1.0)
    archive.visits_ended("door", [_left(track)], live=set())
    archive.stop(timeout_s=10)
    config = tmp_path / "my config.yaml"
    config.write_text(json.dumps({"cameras": [{"name": "door", "url": str(CLIP)}],
                                  "archive": {"dir": str(tmp_path / "archive")}}))  # fmt: skip
    enroll = "to enroll someone from their visits: facewatch enroll --config"
    how = "--name NAME FOLDER... (the folders above; --skip-bad leaves out images it refuses)"
    assert main(["archive", "list", "--config", str(config)]) == 0
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == f"{enroll} '{config}' {how}"
    assert main(["archive", "list", "--dir", str(tmp_path / "archive")]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"{enroll} CONFIG {how}"
    for nothing in (["--camera", "gate"], ["--json"]):  # no folder listed, or for a script
        assert main(["archive", "list", "--config", str(config), *nothing]) == 0
        assert "to enroll" not in capsys.readouterr().err


@pytest.mark.parametrize("which", ["unknown", "all"])
def test_a_visit_once_named_and_then_unknown_is_not_an_unknown_visit(
    tmp_path, clip_faces, which
) -> None:
    archive = _archive(tmp_path, which=which)
    archive.start()
    track = _visit(archive, clip_faces[:2], time.time(), 1.0)
    track.announced.add("Bob")  # confirmed as Bob, then changed to unknown: left unknown
    archive.visits_ended("door", [_left(track)], live=set())
    archive.stop(timeout_s=10)
    visits = _visits(tmp_path)
    assert len(visits) == (1 if which == "all" else 0)
    if visits:
        about = json.loads((visits[0] / VISIT_FILE).read_text())
        assert about["identity"] is None and about["named"] == ["Bob"]


def test_a_failing_step_neither_stops_the_writer_nor_the_scheduler(
    tmp_path, clip_faces, monkeypatch, caplog
) -> None:
    import daemon.archive as archive_module

    errors = _sample("facewatch_archive_failures_total", reason="error")
    internal = _sample("facewatch_archive_failures_total", reason="internal")
    archive = _archive(tmp_path)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(archive, "_scan", broken)
    archive.start()
    with monkeypatch.context() as patch:
        patch.setattr(archive_module, "rate_face", broken)
        _visit(archive, clip_faces[:1], time.time(), 1.0, track_id=1)  # raises nothing
    track = _visit(archive, clip_faces[:2], time.time(), 1.0, track_id=2)
    archive.visits_ended("door", [_left(track)], live=set())
    archive.stop(timeout_s=10)
    assert [v.name.split("-")[1] for v in _visits(tmp_path)] == ["t2"]
    assert _sample("facewatch_archive_failures_total", reason="error") == errors + 1  # scan
    assert _sample("facewatch_archive_failures_total", reason="internal") == internal + 1
    assert "face archive: cannot read" in caplog.text
    assert "face archive: a face not archived: RuntimeError('a bug')" in caplog.text


def test_archive_remove_deletes_visits_and_nothing_else(tmp_path, clip_faces, capsys) -> None:
    archive = _archive(tmp_path)
    archive.start()
    for track_id in (1, 2):
        track = _visit(archive, clip_faces[:1], time.time(), 1.0, track_id)
        archive.visits_ended("door", [_left(track)], live=set())
    archive.stop(timeout_s=10)
    first, second = _visits(tmp_path)
    assert main(["archive", "remove", str(first), str(first.parent)]) == 1
    assert "not a visit folder of the face archive" in capsys.readouterr().err
    assert first.exists(), "one refused: nothing deleted"
    mine = tmp_path / "people" / "Bob"  # a visit's files copied among the user's photos
    mine.mkdir(parents=True)
    shutil.copytree(first, mine, dirs_exist_ok=True)
    assert main(["archive", "remove", str(mine)]) == 1 and (mine / VISIT_FILE).exists()
    assert main(["archive", "remove", str(first), str(first)]) == 0  # given twice: once
    assert _visits(tmp_path) == [second]
    assert main(["archive", "remove", str(first), str(second)]) == 1
    assert "no such folder" in capsys.readouterr().err and second.exists()
    assert main(["archive", "remove", second.name]) == 1  # its name only, as list shows last
    assert "give the whole folder, as `archive list` prints it" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T18:30:00Z", datetime.fromisoformat("2026-11-29T18:30:00+00:00")),
        ("2026-11-29 18:30z", datetime.fromisoformat("2026-11-29T18:30:00+00:00")),
        ("2026-11-29 18:30+01:00", datetime.fromisoformat("2026-11-29T17:30:00+00:00")),
        ("2026-11-29", datetime(2026, 11, 29)),  # local midnight
    ],
)
def test_archive_moments_take_a_utc_z_as_python_3_10_does_not(text, expected):
    assert _moment(text) == expected.timestamp()


@pytest.mark.parametrize("text", ["", "Z", "yesterday", "2026-13-01"])
def test_archive_moment_that_is_no_day_is_a_usage_error(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected a day"):
        _moment(text)


def test_archive_list_tells_apart_the_two_times_of_the_hour_a_clock_goes_back(
    tmp_path, capsys, monkeypatch
) -> None:
    """New York, 1 November 2026: 01:30 comes twice (EDT, then EST). Both visits showed
    `2026-11-01 01:30:00`; the one whose UTC offset is not the present one says it."""
    root = tmp_path / "archive"
    for name, ts in (("013000-t1-unknown", 1793511000.0), ("013000-t2-unknown", 1793514600.0)):
        folder = _old_visit(root, "2026-11-01", name, 100)
        (folder / VISIT_FILE).write_text(json.dumps({"first_seen_ts": ts, "camera": "door"}))
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert main(["archive", "list", "--dir", str(root)]) == 0
    finally:
        monkeypatch.undo()
        time.tzset()
    starts = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()]
    assert len(starts) == 2 and len(set(starts)) == 2, starts
    assert all(start.startswith("2026-11-01 01:30:00") for start in starts)
    assert {start[19:] for start in starts} <= {"", "-0400", "-0500"}


def _named_visit(root: Path, camera: str, name: str, named: list[str], image: bytes) -> Path:
    """A visit folder as the writer leaves it, whose events named ``named``."""
    folder = root / "2026-11-30" / camera / name
    folder.mkdir(parents=True)
    (folder / "face-1.jpg").write_bytes(image)
    about = {"camera": camera, "identity": None, "named": named, "first_seen_ts": 1.8e9,
             "images": [{"file": "face-1.jpg"}]}  # fmt: skip
    (folder / VISIT_FILE).write_text(json.dumps(about))
    return folder


def test_gallery_remove_forget_deletes_the_visits_that_show_them(tmp_path, capsys) -> None:
    """`gallery remove NAME --forget` also deletes the archive's visits that named them (in
    any case) and those holding a photo they were enrolled from (an unknown visit they were
    enrolled from), keeps the others, and lists what facewatch cannot reach."""
    import hashlib

    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment

    root = tmp_path / "faces"
    photo = b"\xff\xd8 the photo Zoe was enrolled from"
    named = _named_visit(root, "door", "101500-t1-zo-0a1b2c3d", ["Zoë"], b"\xff\xd8 a")
    shouted = _named_visit(root, "gate", "101600-t2-unknown", ["ZOË"], b"\xff\xd8 b")
    enrolled_from = _named_visit(root, "door", "101700-t3-unknown", [], photo)
    bob = _named_visit(root, "door", "101800-t4-unknown", ["Bob"], b"\xff\xd8 c")
    stranger = _named_visit(root, "door", "101900-t5-unknown", [], b"\xff\xd8 d")
    gallery = tmp_path / "gallery.sqlite"
    with Gallery.create(gallery, "facenet-test@sha256:0123", 4) as made:
        made.enroll(
            [
                Enrollment("Zoë", np.array([1, 0, 0, 0], np.float32),
                           hashlib.sha256(photo).hexdigest()),
                Enrollment("Bob", np.array([0, 1, 0, 0], np.float32), "b1"),
            ]
        )  # fmt: skip
    config = tmp_path / "facewatch.yaml"
    config.write_text(json.dumps({
        "cameras": [{"name": "door", "url": str(CLIP)}],
        "recognition": {"gallery": str(gallery)},
        "archive": {"dir": str(root), "which": "all"},
        "events": {"jsonl_file": str(tmp_path / "events.jsonl")},
    }))  # fmt: skip
    # what is not the writer's, or lies behind a link, is never deleted (nor stops it)
    elsewhere = _named_visit(tmp_path / "elsewhere", "yard", "101500-t9-zo-0a1b2c3d", ["Zoë"],
                             b"\xff\xd8 e")  # fmt: skip
    (root / "2026-11-30" / "yard").symlink_to(elsewhere.parent)
    (root / "2026-11-30" / "door" / "102000-t6-zo-0a1b2c3d").symlink_to(elsewhere)
    own = _named_visit(root, "door", "my photos of zoe", ["Zoë"], b"\xff\xd8 f")
    remove = ["gallery", "remove", "Zoë", "--forget"]
    assert main(remove) == 2, "no archive given"
    assert "--config FILE (its archive.dir) or --archive DIR" in capsys.readouterr().err
    assert main(["gallery", "remove", "Zoe", "--forget", "--config", str(config)]) == 1
    assert "did you mean 'Zoë'" in capsys.readouterr().err
    assert named.exists(), "a mistyped name deletes nothing"
    assert main([*remove, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert not named.exists() and not shouted.exists() and not enrolled_from.exists()
    assert bob.exists() and stranger.exists()
    assert elsewhere.exists() and own.exists()
    assert f"deleted 3 visit(s) of Zoë from the face archive {root}" in out
    assert "removed Zoë (1 face(s))" in out
    assert f"the events file {tmp_path / 'events.jsonl'}" in out
    assert "gallery exports (backups): a restore brings them back" in out
    assert 'facewatch_recognitions_total{identity="Zoë"}' in out
    with Gallery.open(gallery) as left:
        assert [p.name for p in left.identities()] == ["Bob"]
    assert main(["gallery", "remove", "Bob", "--gallery", str(gallery), "--archive", "x"]) == 2
    assert "--archive is for --forget" in capsys.readouterr().err


def test_gallery_remove_forget_reaches_every_archive_of_daemons_sharing_the_gallery(
    tmp_path, capsys
) -> None:
    """Two daemons sharing one gallery, each with its archive: `--forget` with both
    `--archive`s in one run deletes the visit she was enrolled from in the second archive too
    (a second run, with her gone from the gallery, could no longer find it)."""
    import hashlib

    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment

    front, garage = tmp_path / "front", tmp_path / "garage"
    photo = b"\xff\xd8 the photo Zoe was enrolled from"
    named = _named_visit(front, "door", "101500-t1-zoe-0a1b2c3d", ["Zoe"], b"\xff\xd8 a")
    enrolled_from = _named_visit(garage, "garage", "101700-t3-unknown", [], photo)
    stranger = _named_visit(garage, "garage", "101900-t5-unknown", [], b"\xff\xd8 d")
    gallery = tmp_path / "gallery.sqlite"
    with Gallery.create(gallery, "facenet-test@sha256:0123", 4) as made:
        made.enroll([Enrollment("Zoe", np.array([1, 0, 0, 0], np.float32),
                                hashlib.sha256(photo).hexdigest())])  # fmt: skip
    argv = ["gallery", "remove", "Zoe", "--forget", "--gallery", str(gallery)]
    assert main([*argv, "--archive", str(front), "--archive", str(garage)]) == 0
    out = capsys.readouterr().out
    assert not named.exists() and not enrolled_from.exists() and stranger.exists()
    assert f"deleted 1 visit(s) of Zoe from the face archive {garage}" in out


def test_gallery_remove_forget_of_someone_removed_earlier_deletes_their_named_visits(
    tmp_path, capsys
) -> None:
    """`gallery remove NAME --forget` of someone removed earlier (without --forget), or run a
    second time, said 'no identity named' and exited 1: a scripted forget request failed,
    and the docs' archive recipe failed (exit 2) where no visit was left. Now it deletes the
    visits an event named them in, notes that they were not in the gallery and exits 0; a
    name close to an enrolled one that no visit names is still a typo (exit 1)."""
    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment

    root = tmp_path / "faces"
    zoe = _named_visit(root, "door", "101500-t1-zo-0a1b2c3d", ["Zoë"], b"\xff\xd8 a")
    bob = _named_visit(root, "door", "101800-t4-unknown", ["Bob"], b"\xff\xd8 c")
    gallery = tmp_path / "gallery.sqlite"
    with Gallery.create(gallery, "facenet-test@sha256:0123", 4) as made:
        made.enroll([Enrollment("Bob", np.array([0, 1, 0, 0], np.float32), "b1")])
    argv = ["gallery", "remove", "--forget", "--gallery", str(gallery), "--archive", str(root)]
    for deleted in (1, 0):  # removed earlier; then the same request again
        assert main([*argv, "Zoë"]) == 0
        out, err = capsys.readouterr()
        assert "note: Zoë is not in the gallery (removed earlier?); forgotten elsewhere as asked" in err  # fmt: skip
        assert f"deleted {deleted} visit(s) of Zoë from the face archive {root}" in out
        assert "not reached by facewatch" in out
    assert not zoe.exists() and bob.exists()
    assert main([*argv, "Bobb"]) == 1
    assert "no identity named 'Bobb'; did you mean 'Bob'?" in capsys.readouterr().err
    # Bob in another case: his visit was deleted, 'forgotten elsewhere', exit 0, and Bob was
    # left enrolled (the gallery's names are exact, the archive's visits found in any case)
    assert main([*argv, "BOB"]) == 1
    assert "no identity named 'BOB'; did you mean 'Bob'?" in capsys.readouterr().err
    assert bob.exists()
    with Gallery.open(gallery) as left:
        assert [p.name for p in left.identities()] == ["Bob"]


def test_gallery_remove_forget_takes_the_archives_given_and_refuses_one_it_cannot_write(
    tmp_path, capsys, monkeypatch
) -> None:
    """`--archive` names the archives to forget in, before the --config's archive.dir; one
    that does not exist yet has no visit (0 deleted); a config without archive.dir says it
    has no archive and removes her all the same. An archive this user cannot write (the
    daemon's, run as another user), or a file given as one, is refused before anything is
    removed, with the way to run it as the daemon's user."""
    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment

    config_archive, given = tmp_path / "config-faces", tmp_path / "given-faces"
    kept = _named_visit(config_archive, "door", "101500-t1-zoe-0a1b2c3d", ["Zoe"], b"\xff\xd8 a")
    gone = _named_visit(given, "door", "101600-t2-zoe-0a1b2c3d", ["Zoe"], b"\xff\xd8 b")
    gallery = tmp_path / "gallery.sqlite"

    def enrolled(*names: str) -> None:
        with Gallery.create(gallery, "facenet-test@sha256:0123", 4) as made:
            made.enroll([Enrollment(n, np.array([1, 0, 0, 0], np.float32), n) for n in names])

    def config(archive: Path | None) -> str:
        path = tmp_path / "facewatch.yaml"
        settings = {"cameras": [{"name": "door", "url": str(CLIP)}],
                    "recognition": {"gallery": str(gallery)}}  # fmt: skip
        if archive is not None:
            settings["archive"] = {"dir": str(archive)}
        path.write_text(json.dumps(settings))
        return str(path)

    enrolled("Zoe")
    remove = ["gallery", "remove", "Zoe", "--forget", "--config"]
    missing = tmp_path / "not-made-yet"
    assert main([*remove, config(config_archive), "--archive", str(given), "--archive",
                 str(missing)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert not gone.exists() and kept.exists()
    assert f"deleted 0 visit(s) of Zoe from the face archive {missing}" in out
    gallery.unlink()
    enrolled("Zoe")
    assert main([*remove, config(None)]) == 0
    assert (
        "archive.dir is not set: no face archive to delete visits from" in capsys.readouterr().out
    )
    gallery.unlink()
    enrolled("Zoe")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: real_access(path, mode) and not (
            Path(path) == config_archive and mode & os.W_OK)
    )  # fmt: skip
    for refused in (config_archive, a_file):
        assert main([*remove, config(refused)]) == 1
        err = capsys.readouterr().err
        assert f"{refused}: the face archive cannot be read and written by this user" in err
        assert kept.exists()
    with Gallery.open(gallery) as left:
        assert [p.name for p in left.identities()] == ["Zoe"]


def test_gallery_remove_forget_of_someone_removed_earlier_reaches_every_archive(
    tmp_path, capsys
) -> None:
    """Someone removed earlier, forgotten with two `--archive`s (and a third not made yet):
    the visits named after them are deleted in each of them, not the first only."""
    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment

    front, garage = tmp_path / "front", tmp_path / "garage"
    visits = [_named_visit(root, "door", "101500-t1-zoe-0a1b2c3d", ["Zoe"], b"\xff\xd8 a")
              for root in (front, garage)]  # fmt: skip
    gallery = tmp_path / "gallery.sqlite"
    with Gallery.create(gallery, "facenet-test@sha256:0123", 4) as made:
        made.enroll([Enrollment("Bob", np.array([0, 1, 0, 0], np.float32), "b1")])
    argv = ["gallery", "remove", "Zoe", "--forget", "--gallery", str(gallery)]
    roots = [str(root) for root in (tmp_path / "not-made-yet", front, garage)]
    assert main([*argv, *(a for root in roots for a in ("--archive", root))]) == 0
    out = capsys.readouterr().out
    assert not any(visit.exists() for visit in visits)
    assert f"deleted 1 visit(s) of Zoe from the face archive {garage}" in out


def test_gallery_remove_says_what_it_removes(capsys) -> None:
    """Its help promised to "forget a person and all their faces": their archived visits,
    events and history stayed."""
    for command in (["gallery", "--help"], ["gallery", "remove", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        out = " ".join(capsys.readouterr().out.split())
        assert "remove a person and their enrolled faces from the gallery" in out.lower()
        assert "forget a person and all their faces" not in out
    assert "--forget deletes the visits and lists the rest" in out


def test_archive_remove_with_config_deletes_only_its_archives_visits(tmp_path, capsys) -> None:
    root = tmp_path / "faces"
    ours = _named_visit(root, "door", "101500-t1-unknown", [], b"\xff\xd8 a")
    theirs = _named_visit(tmp_path / "other", "door", "101600-t2-unknown", [], b"\xff\xd8 b")
    config = tmp_path / "facewatch.yaml"
    config.write_text(json.dumps({"cameras": [{"name": "door", "url": str(CLIP)}],
                                  "archive": {"dir": "faces"}}))  # fmt: skip
    remove = ["archive", "remove", "--config", str(config)]
    assert main([*remove, str(ours), str(theirs)]) == 1
    assert f"not in the face archive {root.resolve()}" in capsys.readouterr().err
    assert ours.exists() and theirs.exists(), "nothing deleted"
    assert main([*remove, str(ours)]) == 0 and not ours.exists()


def test_gallery_remove_forget_says_which_visit_it_could_not_delete(
    tmp_path, capsys, monkeypatch
) -> None:
    """A visit that cannot be deleted (a permission, a read-only disk) is named, and the
    person stays enrolled, so that the command can be run again (it stopped on a bare
    'Cannot call rmtree on a symbolic link')."""
    import shutil

    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment

    root = tmp_path / "faces"
    visit = _named_visit(root, "door", "101500-t1-zo-0a1b2c3d", ["Zoë"], b"\xff\xd8 a")
    gallery = tmp_path / "gallery.sqlite"
    with Gallery.create(gallery, "facenet-test@sha256:0123", 4) as made:
        made.enroll([Enrollment("Zoë", np.array([1, 0, 0, 0], np.float32), "z1")])

    def refuse(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    argv = ["gallery", "remove", "Zoë", "--forget", "--gallery", str(gallery), "--archive"]
    assert main([*argv, str(root)]) == 1
    assert f"error: {visit}: could not be deleted (Permission denied)" in capsys.readouterr().err
    with Gallery.open(gallery) as left:
        assert [p.name for p in left.identities()] == ["Zoë"]


def test_archive_prune_never_follows_a_link_planted_as_the_archives_lock(tmp_path, capsys) -> None:
    """A link in the archive's folder named as its lock (the daemon's user can write there):
    `archive prune`, run as root from a timer, emptied the file it pointed at and gave it to
    the folder's owner. The link is refused and the file is untouched."""
    root = tmp_path / "archive"
    root.mkdir()
    precious = tmp_path / "shadow"
    precious.write_text("root:secret\n")
    (root / "archive.lock").symlink_to(precious)
    assert main(["archive", "prune", "--dir", str(root), "--keep-days", "1"]) == 1
    assert "not a plain file of its own (a link, a FIFO...): remove it" in capsys.readouterr().err
    (root / "archive.lock").unlink()
    os.link(precious, root / "archive.lock")  # (a hard link, where the system allows one)
    assert main(["archive", "prune", "--dir", str(root), "--keep-days", "1"]) == 1
    assert precious.read_text() == "root:secret\n"


def test_one_folder_for_the_spool_and_the_archive_still_starts(tmp_path) -> None:
    """archive.dir and mqtt.spool_dir the same folder (it ran before the archive had a
    lock): the two locks are two files, so the daemon does not find itself in the way."""
    from daemon.config_file import parse_config
    from daemon.preflight import outputs_claimed
    from daemon.spool import Spool

    folder = tmp_path / "state"
    folder.mkdir()
    config = parse_config({"cameras": [{"name": "door", "url": str(CLIP)}],
                           "archive": {"dir": str(folder)}})  # fmt: skip
    spool = Spool(folder, 10)
    try:
        with outputs_claimed(config):
            assert (folder / "archive.lock").exists()
    finally:
        spool.close()


def test_archive_list_counts_an_older_facewatchs_low_scored_face_as_not_enrollable(
    tmp_path, capsys
) -> None:
    """A visit an older facewatch rated (it marked a face the detector scored 0.71, the
    back of a head, enrollable): the count says what enroll now takes, not the old mark."""
    folder = tmp_path / "archive" / "2026-11-30" / "door" / "101500-t1-unknown"
    folder.mkdir(parents=True)
    images = []
    for k, score in enumerate((0.99, 0.71, 0.9498), start=1):
        (folder / f"face-{k}.jpg").write_bytes(b"\xff\xd8")
        images.append({"file": f"face-{k}.jpg", "score": score, "enrollable": True})
    about = {"camera": "door", "identity": None, "first_seen_ts": 1.8e9, "images": images}
    (folder / VISIT_FILE).write_text(json.dumps(about))
    assert main(["archive", "list", "--dir", str(tmp_path / "archive")]) == 0
    assert "3 image(s), 1 enrollable" in capsys.readouterr().out
