"""The face archive end to end: the daemon on the demo clip keeps each visit of an unknown
face on disk, one folder per `left` event, and `facewatch enroll` takes such a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.archive_files import VISIT_FILE
from daemon.cli import main
from daemon.gallery import Gallery
from tests.conftest import REPO
from tests.integration.services import Daemon, Subscriber, daemon_settings, wait_for

pytestmark = pytest.mark.slow

CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"
ENROLLABLE_PX = 80  # a face this wide in the 360p clip passes enroll's size and blur gates


CLIP_WH = (640, 360)


def _widest(archive: Path) -> tuple[Path | None, float]:
    """The visit folder with the widest face so far that the archive marks enrollable and
    the frame shows whole (enroll refuses a profile, or a face cut off by the edge), and that
    width."""
    best: tuple[Path | None, float] = (None, 0.0)
    for path in archive.glob(f"*/*/*/{VISIT_FILE}"):
        try:
            images = json.loads(path.read_text())["images"]
        except (OSError, ValueError):
            continue  # being written
        boxes = (image["bbox_xyxy"] for image in images if image["enrollable"])
        for x0, y0, x1, y1 in boxes:
            if min(x0, y0) >= 0 and x1 <= CLIP_WH[0] and y1 <= CLIP_WH[1]:
                best = max(best, (path.parent, x1 - x0), key=lambda entry: entry[1])
    return best


def test_each_visit_of_an_unknown_face_is_archived_and_can_be_enrolled(
    tmp_path, broker, test_model
) -> None:
    archive = tmp_path / "archive"
    settings = daemon_settings(
        [{"name": "stage", "url": str(CLIP), "fps": 5}],
        broker.port,
        tmp_path,
        archive={"dir": str(archive), "per_visit": 4},
    )
    subscriber = Subscriber(broker.port, "facewatch/test/events/#")
    daemon = Daemon(tmp_path, settings)
    daemon.start()
    try:
        wait_for(
            lambda: (
                sum(e["type"] == "left" for e in subscriber.events()) >= 3
                and _widest(archive)[1] >= ENROLLABLE_PX
            ),
            90,
            f"three faces that came and went, one of them {ENROLLABLE_PX} px wide or more",
        )
        assert daemon.metric('facewatch_archive_visits_total{camera="stage"}') >= 1
    finally:
        code = daemon.stop()
        subscriber.close()
    assert code == 0, daemon.log()[-3000:]

    left = {e["track_id"]: e for e in subscriber.events() if e["type"] == "left"}
    visits = {}
    for path in archive.glob(f"*/stage/*/{VISIT_FILE}"):
        about = json.loads(path.read_text())
        visits[about["track_id"]] = (path.parent, about)
    assert sorted(visits) == sorted(left), "one folder per visit, open ones closed at the stop"
    for track_id, (folder, about) in visits.items():
        assert about["first_seen_ts"] == left[track_id]["first_seen_ts"]
        assert about["reason"] == left[track_id]["reason"] and about["identity"] is None
        assert 1 <= len(about["images"]) <= 4
        assert all((folder / image["file"]).is_file() for image in about["images"])

    # the visit with the largest face, enrolled as it is
    folder = _widest(archive)[0]
    gallery = tmp_path / "gallery.sqlite"
    code = main(
        # (--allow-profile: the clip's singer turns his head, and enroll's own landmarks on
        # the archived crop may call a face the archive marked enrollable a profile;
        # --allow-mismatch: the random model puts a visit's images far apart, as two people)
        ["enroll", "--name", "Visitor", str(folder), "--largest", "--skip-bad", "--allow-profile",
         "--allow-mismatch", "--model", str(test_model), "--gallery", str(gallery), "--threads",
         "2", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    with Gallery.open(gallery) as enrolled:
        [visitor] = enrolled.identities()
        assert visitor.name == "Visitor" and visitor.embeddings >= 1
