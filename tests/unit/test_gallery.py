"""daemon/gallery.py and the calibration maths: pure, on vectors the tests choose."""

from __future__ import annotations

import os
import sqlite3
import stat

import numpy as np
import pytest

from daemon.gallery import DEFAULT_THRESHOLD, Enrollment, Gallery, GalleryError
from daemon.recognition import calibrate

MODEL = "facenet-test@sha256:0123456789abcdef"
D = 8


def unit(*values: float) -> np.ndarray:
    v = np.zeros(D, np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def axis(k: int) -> np.ndarray:
    v = np.zeros(D, np.float32)
    v[k] = 1.0
    return v


@pytest.fixture
def gallery(tmp_path):
    g = Gallery.create(tmp_path / "g.sqlite", MODEL, D, lock_timeout_s=0.2)
    g.enroll(
        [
            Enrollment("alice", axis(0), "a1"),
            Enrollment("alice", unit(1, 0.2), "a2"),
            Enrollment("bob", axis(1), "b1"),
            Enrollment("carol", axis(2), "c1"),
        ]
    )
    yield g
    g.close()


def test_match_picks_the_nearest_and_unknown_when_too_far(gallery) -> None:
    queries = np.stack([unit(0.1, 1), unit(1, 0.1), unit(0, 0, 0, 1), unit(1, 1)])
    bob, alice, far, between = gallery.match(queries)
    assert (bob.identity, alice.identity) == ("bob", "alice")
    assert bob.distance == pytest.approx(2 - 2 * float(unit(0.1, 1) @ axis(1)), abs=1e-6)
    assert 0 < bob.confidence <= 1 and bob.threshold == DEFAULT_THRESHOLD
    assert far.identity is None and far.confidence == 0 and far.distance == pytest.approx(2.0)
    assert far.nearest in {"alice", "bob", "carol"}
    assert between.identity == "alice"  # 1-1 is nearer a2 = (1, 0.2) than b1
    assert gallery.match(np.zeros((0, D))) == []


def test_per_identity_threshold_overrides_the_default(gallery) -> None:
    query = unit(0.5, 1)  # squared distance to bob: 2 - 2 cos = 0.211
    assert gallery.match(query[None])[0].identity == "bob"
    gallery.set_threshold("bob", 0.1)
    strict = gallery.match(query[None])[0]
    assert strict.identity is None and strict.nearest == "bob" and strict.threshold == 0.1
    gallery.set_threshold("bob", None)
    gallery.set_threshold(None, 0.05)  # the default
    assert gallery.match(query[None])[0].identity is None
    assert [(i.name, i.threshold, i.embeddings) for i in gallery.identities()] == [
        ("alice", None, 2),
        ("bob", None, 1),
        ("carol", None, 1),
    ]


def test_another_model_is_refused_with_both_names(gallery) -> None:
    path = gallery.path
    with pytest.raises(
        GalleryError, match=r"enrolled with model 'facenet-test@sha256:0123.*'other@sha256:1'"
    ):
        Gallery.open(path, "other@sha256:1")
    Gallery.open(path, MODEL).close()
    Gallery.open(path).close()  # no model: list, export ... do not need one


def test_enrollment_is_one_transaction(gallery) -> None:
    before = gallery.embeddings()[0]
    bad = [
        Enrollment("dave", axis(3), "d1"),
        Enrollment("erin", axis(4), "e1"),
        Enrollment("frank", np.ones(D + 1, np.float32), "f1"),  # wrong size: fails third
    ]
    with pytest.raises(GalleryError, match="nothing was enrolled"):
        gallery.enroll(bad)
    assert np.array_equal(gallery.embeddings()[0], before)
    assert {i.name for i in gallery.identities()} == {"alice", "bob", "carol"}
    # the same source image twice for one person is stored once
    assert gallery.enroll([Enrollment("bob", axis(1), "b1"), Enrollment("bob", axis(1), "b2")]) == 1


def test_read_only_file_gives_a_clear_error(gallery) -> None:
    path = gallery.path
    gallery.close()
    os.chmod(path, 0o400)
    try:
        with pytest.raises(GalleryError, match=r"gallery file is read-only"):
            Gallery.open(path, MODEL, writable=True)
        reader = Gallery.open(path, MODEL)  # reading is fine
        assert len(reader.identities()) == 3
        with pytest.raises(GalleryError, match="opened read-only"):
            reader.remove("bob")
        reader.close()
    finally:
        os.chmod(path, 0o600)


def test_locked_database_gives_a_clear_error(gallery) -> None:
    other = sqlite3.connect(gallery.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(GalleryError, match="locked by another writer"):
            gallery.enroll([Enrollment("dave", axis(3), "d1")])
        assert gallery.match(axis(1)[None])[0].identity == "bob"  # reading still works
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert gallery.enroll([Enrollment("dave", axis(3), "d1")]) == 1


def test_files_are_owner_only(tmp_path) -> None:
    os.umask(0o022)
    path = tmp_path / "new" / "g.sqlite"
    Gallery.create(path, MODEL, D).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_not_a_gallery_and_missing_file(tmp_path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(GalleryError, match="not a facewatch gallery"):
        Gallery.open(junk)
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery.open(tmp_path / "none.sqlite")


def test_remove_and_rename(gallery) -> None:
    assert gallery.remove("alice") == 2
    with pytest.raises(GalleryError, match="no identity named 'alice'"):
        gallery.remove("alice")
    gallery.rename("bob", "robert")
    with pytest.raises(GalleryError, match="'carol' already exists"):
        gallery.rename("robert", "carol")
    assert [i.name for i in gallery.identities()] == ["carol", "robert"]
    assert gallery.match(axis(1)[None])[0].identity == "robert"


def test_calibration_keeps_the_false_accept_rate_under_the_target() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 32))
    vectors = np.concatenate([c + 0.35 * rng.normal(size=(5, 32)) for c in centres])
    owners = [f"p{k}" for k in range(20) for _ in range(5)]
    result = calibrate(vectors, owners, target_far=0.05)
    assert result.far <= 0.05 and result.people == 20
    assert result.impostor == 100 and result.genuine == 100
    assert 0 < result.threshold < 4 and result.frr < 0.5
    loose = calibrate(vectors, owners, target_far=0.5)
    assert loose.threshold >= result.threshold and loose.frr <= result.frr
    with pytest.raises(ValueError, match="at least 2 enrolled people"):
        calibrate(vectors[:5], owners[:5])
    with pytest.raises(ValueError, match="2 or more images"):
        calibrate(vectors[::5], owners[::5])
