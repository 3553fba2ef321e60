"""daemon/gallery.py, the calibration maths and the gallery commands, on vectors the tests choose."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from daemon import gallery as gallery_module
from daemon import gallery_export, gallery_write
from daemon.calibration import calibrate, look_alikes
from daemon.events import person_key
from daemon.gallery import DEFAULT_THRESHOLD, Gallery, GalleryError
from daemon.gallery_file import file_stamp
from daemon.gallery_write import Enrollment
from tests.conftest import open_files

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


def test_confidence_is_1_on_an_enrolled_face_and_falls_to_0_at_the_threshold(gallery) -> None:
    """identify --json's and the events' confidence: 1 for a face as it was enrolled, then
    1 - distance / threshold (under a threshold of 1: 0.79 at a distance of 0.211, 0.03 at
    0.971), 0 past the threshold."""
    assert gallery.match(axis(1)[None])[0].confidence == pytest.approx(1.0)  # bob's own face
    gallery.set_threshold(None, 1.0)
    near = gallery.match(unit(0.5, 1)[None])[0]
    assert (near.identity, near.confidence) == ("bob", pytest.approx(1.0 - 0.2111, abs=1e-3))
    edge, past = gallery.match(np.stack([unit(0, 0, 0.6, 1), unit(0, 0, 0.5, 1)]))
    assert (edge.identity, edge.confidence) == ("carol", pytest.approx(0.029, abs=1e-3))  # 0.971
    assert (past.identity, past.confidence) == (None, 0.0)  # 1.106 from carol


def test_the_runner_up_is_the_nearest_other_person_not_the_winners_other_face(gallery) -> None:
    """identify's runner-up, for a face nearest alice (who has two faces): bob, the nearest
    other person, never alice again through her second face."""
    match = gallery.match(unit(1, 0.1)[None], runner_up=True)[0]
    assert (match.identity, match.runner_up) == ("alice", "bob")


def test_a_one_person_gallery_has_no_runner_up(gallery) -> None:
    """Only alice (two faces) enrolled: a face of hers has no runner-up, not alice again."""
    gallery.remove("bob")
    gallery.remove("carol")
    match = gallery.match(axis(0)[None], runner_up=True)[0]
    assert (match.identity, match.runner_up, match.runner_up_distance) == (
        "alice",
        None,
        float("inf"),
    )


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


def test_the_daemons_threshold_replaces_the_default_but_not_a_persons_own(gallery) -> None:
    """recognition.threshold in the daemon's config (``threshold_override``) is the
    threshold of everyone without their own; a person's own still holds."""
    gallery.set_threshold("carol", 0.3)
    with Gallery.open(gallery.path, MODEL) as daemons:
        daemons.threshold_override = 0.1
        near_bob, near_carol = daemons.match(np.stack([unit(0.5, 1), unit(0, 0.5, 1)]))
    assert (near_bob.identity, near_bob.nearest, near_bob.threshold) == (None, "bob", 0.1)
    assert (near_carol.identity, near_carol.threshold) == ("carol", 0.3)


def test_a_cameras_threshold_replaces_the_default_and_a_looser_own_one(gallery) -> None:
    """A camera's own threshold (``defaults``, per face) is everyone's there; a person's own
    holds only where it is stricter: carol's 0.3 becomes the night camera's 0.1, bob's 0.05
    stays. A face without one (the day camera's) is matched as before."""
    gallery.set_threshold("carol", 0.3)
    gallery.set_threshold("bob", 0.05)
    faces = np.stack([unit(1, 0.6), unit(0, 0.5, 1), unit(0.2, 1)])  # near alice, carol, bob
    with Gallery.open(gallery.path, MODEL) as daemons:
        daemons.threshold_override = 0.2
        night = daemons.match(faces, defaults=[0.1] * 3)
        day = daemons.match(faces, defaults=[None] * 3)
    assert [(m.nearest, m.threshold) for m in night] == [
        ("alice", 0.1),
        ("carol", 0.1),
        ("bob", 0.05),
    ]
    assert [m.threshold for m in day] == [0.2, 0.3, 0.05]
    assert [m.identity for m in day] == ["alice", "carol", "bob"]
    assert [m.identity for m in night] == [None, None, "bob"]


def test_a_gallery_whose_last_person_was_removed_finds_every_face_unknown(gallery) -> None:
    """Everyone removed while the daemon runs: each face is unknown (not an error that stops
    the daemon's engine thread at the first face)."""
    for name in ("alice", "bob", "carol"):
        gallery.remove(name)
    with Gallery.open(gallery.path, MODEL) as empty:
        assert empty.load() == []
        [face] = empty.match(axis(1)[None])
    assert (face.identity, face.distance, face.confidence) == (None, float("inf"), 0.0)


def test_another_model_is_refused_with_both_names(gallery) -> None:
    path = gallery.path
    with pytest.raises(
        GalleryError, match=r"enrolled with model 'facenet-test@sha256:0123.*'other@sha256:1'"
    ):
        Gallery.open(path, "other@sha256:1")
    for other in ("other@sha256:1", MODEL + "+flip"):  # how to enroll again, in commands
        with pytest.raises(GalleryError) as refused:
            Gallery.open(path, other)
        assert "enroll everyone again into a new gallery: `facewatch enroll --config FILE " \
               "--gallery NEW.sqlite --dir PHOTOS`" in str(refused.value)  # fmt: skip
        assert str(refused.value).endswith("then set recognition.gallery: NEW.sqlite in FILE")
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
    # a vector that is not unit length (an embedding not L2-normalised) would be nearest to
    # every face by the dot product the match uses: refused, naming the person
    with pytest.raises(GalleryError, match="'dave' has length 3, not 1"):
        gallery.enroll([Enrollment("erin", axis(4), "e1"), Enrollment("dave", 3 * axis(3), "d1")])
    # too short a vector would be matched by nobody; a NaN (a broken model) by nobody either
    with pytest.raises(GalleryError, match=r"'dave' has length 0\.5, not 1"):
        gallery.enroll([Enrollment("dave", 0.5 * axis(3), "d1")])
    with pytest.raises(GalleryError, match=f"'dave' has {D} finite values expected {D}"):
        gallery.enroll([Enrollment("dave", np.full(D, np.nan, np.float32), "d1")])
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


_CUT_WRITE = """
import os, sys, time
import numpy as np
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
g = Gallery.create(sys.argv[1], sys.argv[2], int(sys.argv[3]))
g.enroll([Enrollment("ada", np.eye(int(sys.argv[3]), dtype=np.float32)[0], "a1")])
conn = g._conn  # a large write, its pages spilled into the file: then the power goes
conn.execute("PRAGMA cache_size=5")
conn.execute("BEGIN IMMEDIATE")
for i in range(3000):
    conn.execute("INSERT INTO identities (name, threshold, created, updated) "
                 "VALUES (?, NULL, 'x', 'x')", (f"p{i}" * 50,))
print("cut here", flush=True)
time.sleep(60)
"""


def test_a_write_cut_short_is_rolled_back_and_the_gallery_reads(tmp_path) -> None:
    """A power cut or kill -9 while a gallery is written leaves its journal 'hot': a reader
    (the daemon, `gallery list`) was refused as 'read-only' and the daemon did not start.
    The cut write is rolled back; what was committed before it is all there."""
    path = tmp_path / "g.sqlite"
    with subprocess.Popen(  # (its pipe closed, and it waited for, on the way out)
        [sys.executable, "-c", _CUT_WRITE, str(path), MODEL, str(D)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    ) as writer:  # fmt: skip
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "cut here\n"
        finally:
            writer.kill()
            writer.wait(timeout=30)
    assert (tmp_path / "g.sqlite-journal").stat().st_size > 0  # hot
    uri = f"{path.as_uri()}?mode=ro"
    alone = contextlib.closing(sqlite3.connect(uri, uri=True))
    with alone as db, pytest.raises(sqlite3.OperationalError, match="readonly"):  # SQLite's own
        db.execute("SELECT count(*) FROM identities").fetchone()
    g = Gallery.open(path, MODEL)
    assert [i.name for i in g.identities()] == ["ada"]
    g.close()


def test_a_hot_journal_is_told_from_a_read_only_file_without_error_codes_too(tmp_path) -> None:
    """Python 3.10's sqlite3 errors carry no code: a 'readonly' error with the journal
    beside the file is a write cut short; without it, a read-only file."""
    from daemon.gallery_file import hot_journal

    path = tmp_path / "g.sqlite"
    path.touch()
    refused = sqlite3.OperationalError("attempt to write a readonly database")
    assert not hot_journal(refused, path)
    path.with_name("g.sqlite-journal").write_bytes(b"x" * 512)
    assert hot_journal(refused, path)


def _a_hot_journal(folder: Path) -> bytes:
    """The journal a large write leaves when the power goes (spilled pages: it is hot)."""
    folder.mkdir()
    conn = sqlite3.connect(folder / "probe.sqlite", isolation_level=None)
    conn.execute("PRAGMA cache_size=2")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE t(x)")
    for _ in range(200):
        conn.execute("INSERT INTO t VALUES (randomblob(3000))")
    journal = (folder / "probe.sqlite-journal").read_bytes()
    conn.execute("ROLLBACK")
    conn.close()
    return journal


def test_an_empty_file_in_the_gallerys_place_is_named_and_enroll_replaces_it(tmp_path) -> None:
    """A gallery's creation cut short (older versions made the file, then its tables) left an
    empty file that both enroll and the daemon refused as 'not a facewatch gallery'. New
    galleries are made whole beside their place, then moved there."""
    path = tmp_path / "g.sqlite"
    path.touch(mode=0o600)
    with pytest.raises(GalleryError, match=r"an empty file, not a gallery .*delete it, or enroll"):
        Gallery.open(path)
    path.with_name("g.sqlite-journal").write_bytes(
        _a_hot_journal(tmp_path.parent / f"{tmp_path.name}-probe")
    )  # its own
    g = Gallery.open_or_create(path, MODEL, D)
    assert g.identities() == [] and g.model_id == MODEL
    g.enroll([Enrollment("ada", axis(0), "a1")])
    g.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.sqlite"]  # no scratch left
    with Gallery.open(path, MODEL) as again:  # (the old journal did not roll it back)
        assert [i.name for i in again.identities()] == ["ada"]
    with pytest.raises(GalleryError, match="already exists"):
        Gallery.create(path, MODEL, D)


_WRITING = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")  # an enroll, a gallery command, writing it
print("writing", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts this process's files")
def test_a_gallery_refused_leaves_no_file_open(gallery) -> None:
    """A gallery refused (another model's, a file that is no gallery, one another process is
    writing) is closed as it is refused, not at Python's next garbage collection: the daemon
    tries a gallery being written again at every check (2 s), and each refusal left its file
    open until a collection (here 15 files after 15 refusals)."""
    path = gallery.path
    gallery.close()
    junk = path.with_name("junk.sqlite")
    junk.write_bytes(b"not sqlite at all" * 100)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITING, str(path)], stdout=subprocess.PIPE, text=True
    )
    collecting = gc.isenabled()
    gc.disable()  # (a collection would close what a refusal left open)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        before = open_files()
        for _ in range(5):
            with pytest.raises(GalleryError, match="locked by another writer"):
                Gallery.open(path, MODEL, lock_timeout_s=0.01)
        writer.kill()
        writer.wait(10)
        for _ in range(5):
            with pytest.raises(GalleryError, match="enrolled with model"):
                Gallery.open(path, "other@sha256:1")
            with pytest.raises(GalleryError, match="not a facewatch gallery"):
                Gallery.open(junk)
        assert open_files() == before
    finally:
        if collecting:
            gc.enable()
        writer.kill()
        writer.wait(10)
        if writer.stdout is not None:
            writer.stdout.close()


def test_not_a_gallery_and_missing_file(tmp_path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(GalleryError, match="not a facewatch gallery"):
        Gallery.open(junk)
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery.open(tmp_path / "none.sqlite")


def test_a_person_given_a_new_photo_is_updated_then(gallery, monkeypatch) -> None:
    """`gallery list` shows when each person last changed: a new photo of bob is such a
    change, a photo he already has is not, and nobody else changes."""
    before = {i.name: i.updated for i in gallery.identities()}
    monkeypatch.setattr(gallery_write, "now_iso", lambda: "2031-01-02T03:04:05Z")
    assert gallery.enroll([Enrollment("bob", unit(0.1, 1), "b2")]) == 1
    assert gallery.enroll([Enrollment("alice", axis(0), "a1")]) == 0
    after = {i.name: i.updated for i in gallery.identities()}
    assert after == {**before, "bob": "2031-01-02T03:04:05Z"}


def test_remove_and_rename(gallery) -> None:
    assert gallery.remove("alice") == 2
    with pytest.raises(GalleryError, match="no identity named 'alice'"):
        gallery.remove("alice")
    gallery.rename("bob", "robert")
    with pytest.raises(GalleryError, match="'carol' already exists"):
        gallery.rename("robert", "carol")
    assert [i.name for i in gallery.identities()] == ["carol", "robert"]
    assert gallery.match(axis(1)[None])[0].identity == "robert"


def test_a_removed_persons_name_and_embeddings_are_gone_from_the_file(
    tmp_path, sqlite_default_build
) -> None:
    """`gallery remove` overwrites the person's rows: neither their name nor their face
    embedding can be read from the file (or a copy of it) afterwards, also with an SQLite
    built with its own default (secure_delete off: Debian's build turns it on)."""
    path = tmp_path / "g.sqlite"
    face = unit(0.3, 0.7, 0.1, 0.9)
    with Gallery.create(path, MODEL, D) as made:
        made.enroll([Enrollment("zoe-forgotten", face, "z1"), Enrollment("bob", axis(1), "b1")])
    assert face.astype("<f4").tobytes() in path.read_bytes()
    with Gallery.open(path, MODEL, writable=True) as gallery:
        assert gallery.remove("zoe-forgotten") == 1
    data = path.read_bytes()
    assert b"zoe-forgotten" not in data
    assert face.astype("<f4").tobytes() not in data
    with Gallery.open(path, MODEL) as gallery:
        assert [i.name for i in gallery.identities()] == ["bob"]


def test_names_that_differ_in_case_only_are_one_person(gallery) -> None:
    """`Bob` and `bob` would be two people with half the photos each: refused, and a name
    not found suggests the one meant."""
    with pytest.raises(GalleryError, match="no identity named 'Alice'; did you mean 'alice'"):
        gallery.remove("Alice")
    with pytest.raises(GalleryError, match="no identity named 'carl'; did you mean 'carol'"):
        gallery.remove("carl")
    with pytest.raises(GalleryError, match="'bob' is enrolled; 'Bob' would be another person"):
        gallery.enroll([Enrollment("Bob", axis(3), "b2")])
    with pytest.raises(GalleryError, match="'carol' is enrolled; 'Carol' would be another"):
        gallery.rename("bob", "Carol")
    with pytest.raises(GalleryError, match="'Dave' is enrolled; 'dave' would be another"):
        gallery.enroll([Enrollment("Dave", axis(3), "d1"), Enrollment("dave", axis(4), "d2")])
    assert "Dave" not in [i.name for i in gallery.identities()], "both in one enroll: neither"
    gallery.rename("bob", "Bob")  # a person's own name in another case is fine
    assert sorted(i.name for i in gallery.identities()) == ["Bob", "alice", "carol"]
    assert gallery.enroll([Enrollment("Bob", axis(3), "b2")]) == 1


def test_calibration_keeps_the_false_accept_rate_under_the_target() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 32))
    vectors = np.concatenate([c + 0.35 * rng.normal(size=(5, 32)) for c in centres])
    owners = [f"p{k}" for k in range(20) for _ in range(5)]
    result = calibrate(vectors, owners, target_far=0.05)
    assert result.far <= 0.05 and result.people == 20
    assert result.faces == 100 and result.genuine == 100 and result.impostor <= 100
    assert 0 < result.threshold < 4 and result.frr < 0.5
    loose = calibrate(vectors, owners, target_far=0.5)
    assert loose.threshold >= result.threshold and loose.frr <= result.frr
    with pytest.raises(ValueError, match="at least 2 enrolled people"):
        calibrate(vectors[:5], owners[:5])
    with pytest.raises(ValueError, match="2 or more images"):
        calibrate(vectors[::5], owners[::5])


def _people(
    count: int, faces: int, size: int = 64, spread: float = 0.3
) -> tuple[np.ndarray, list[str]]:
    """``count`` people of ``faces`` faces each, their faces near a random centre of their own."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(count, size))
    vectors = np.concatenate([c + spread * rng.normal(size=(faces, size)) for c in centres])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [f"p{k}" for k in range(count) for _ in range(faces)]


def _closest_pair(vectors: np.ndarray, owners: list[str]) -> float:
    names = np.array(owners)
    dist = np.maximum(2.0 - 2.0 * vectors @ vectors.T, 0.0)
    return float(dist[names[:, None] != names[None, :]].min())


def test_look_alikes_compares_only_the_new_people_and_finds_them_in_a_large_gallery() -> None:
    """Enroll's "the same person?" warning: a new person one photo each as near as 0.014 to
    someone enrolled is warned of, also when the gallery holds a nearer pair of others
    (twins); distinct people are not; 20,000 enrolled people are no burden (every pair of
    them was compared: 77 s and 2.7 GB for 4,000 people, a MemoryError for 20,000)."""
    rng = np.random.default_rng(0)
    people = rng.normal(size=(20_000, 128)).astype(np.float32)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    owners = [f"p{k}" for k in range(len(people))]
    people[1] = people[0] + 0.002 * rng.normal(size=128)  # twins already enrolled: p0 and p1
    people[1] /= np.linalg.norm(people[1])
    twin = people[7] + 0.005 * rng.normal(size=128).astype(np.float32)  # bob is p7, again
    twin /= np.linalg.norm(twin)
    stranger = rng.normal(size=128).astype(np.float32)
    stranger /= np.linalg.norm(stranger)
    vectors = np.concatenate([[twin, stranger], people])
    names = ["bob", "zed", *owners]
    threshold_of = dict.fromkeys(names, 0.154)
    [pair] = look_alikes(vectors, names, {"bob", "zed"}, threshold_of)
    assert (pair.first, pair.second) == ("bob", "p7") and pair.distance < 0.077


def test_calibration_counts_the_closest_two_people_once() -> None:
    """Two faces that are each other's nearest impostor are one trial: with one false accept
    allowed (100-199 trials at 1 %), the threshold is not the closest two people's distance
    (which strangers pass), and that one false accept shows in the expected FAR."""
    vectors, owners = _people(70, 2)
    vectors[2] = vectors[0] + 0.02 * vectors[3]  # p1's first face right beside p0's
    vectors[2] /= np.linalg.norm(vectors[2])
    result = calibrate(vectors, owners, target_far=0.01)
    assert result.threshold > _closest_pair(vectors, owners) + 1e-6
    assert 100 <= result.impostor < result.faces == 140
    assert result.false_accepts == 1 and result.far == pytest.approx(1 / result.impostor)


def test_the_share_of_strangers_a_gallery_names_is_measured_on_its_own_faces() -> None:
    """The uncalibrated gallery's warning says how many strangers it would name: each face
    taken as a stranger's is named after its nearest face of anyone else, at that person's
    threshold (a strict one of their own holds); past ``probes`` faces, a sample says it."""
    from daemon.calibration import strangers_named

    rng = np.random.default_rng(3)
    vectors, owners = _people(100, 2)
    for k in range(0, 40, 4):  # 10 pairs of look-alikes: p{2j+1} near p{2j}, both faces
        vectors[k + 2 : k + 4] = [_beside(v, 0.05, rng) for v in vectors[k : k + 2]]
    limits = np.full(len(vectors), 0.154)
    assert strangers_named(vectors, owners, limits) == (40 / 200, 200)
    limits[[f for k in range(0, 40, 4) for f in (k, k + 1)]] = 0.01  # p{2j}'s own threshold
    assert strangers_named(vectors, owners, limits) == (20 / 200, 200)  # p{2j+1}: not as p{2j}
    share, tried = strangers_named(vectors, owners, limits, probes=100)
    assert tried == 100 and abs(share - 0.1) < 0.06
    assert strangers_named(vectors[:2], owners[:2], limits[:2]) == (0.0, 0)  # one person


def _beside(vector: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector ``distance`` (squared L2) from the unit ``vector``, in a random direction."""
    away = rng.normal(size=vector.shape)
    away -= (away @ vector) * vector
    away /= np.linalg.norm(away)
    cos = 1.0 - distance / 2.0
    return (cos * vector + np.sqrt(1.0 - cos * cos) * away).astype(np.float32)


def test_calibrates_close_people_are_listed_without_a_burden_at_thousands_of_people() -> None:
    """`gallery calibrate` lists the people a face of one is named as the other: it made an
    object for every pair of people (1.1 million at 1,500 people, some 300 MB; 12.5 million
    and 3 GB at 5,000, which a 4 GB box cannot give) to keep 5 of them. Now only the close
    pairs are gathered: one person enrolled twice first, then the closest, and the count."""
    import tracemalloc

    from daemon.calibration import closest_people

    rng = np.random.default_rng(2)
    vectors, owners = _people(1500, 2)  # p{k}: faces 2k and 2k+1
    vectors[2:4] = [_beside(v, 0.01, rng) for v in vectors[0:2]]  # p1: p0 again
    for k, apart in ((4, 0.05), (8, 0.10)):  # p3 beside p2, p5 beside p4: two people
        vectors[k + 2] = _beside(vectors[k], apart, rng)
        for face in (k, k + 2):  # each one's two faces nearer each other than that
            vectors[face + 1] = _beside(vectors[face], 0.0005, rng)
    tracemalloc.start()
    try:
        close, total = closest_people(vectors, owners, below=0.154)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(p.first, p.second, p.same_person) for p in close] == [
        ("p0", "p1", True),
        ("p2", "p3", False),
        ("p4", "p5", False),
    ]
    assert [p.distance for p in close[1:]] == pytest.approx([0.05, 0.1], abs=0.01) and total == 3
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB"


def test_names_are_normalised_and_checked(gallery) -> None:
    nfd = "Zoe\u0308"  # "Zoë" as macOS spells folder names
    gallery.enroll([Enrollment(" Zo\u00eb ", axis(3), "z1")])
    gallery.enroll([Enrollment(nfd, axis(3), "z2")])
    assert [i.embeddings for i in gallery.identities() if i.name == "Zo\u00eb"] == [2]
    for bad, reason in [
        ("two\nlines", "control characters"),
        ("\x1b[31mred", "control characters"),
        ("   ", "non-empty name"),
        ("Unknown", "reserved"),
        ("Nobody", "reserved: facewatch's outputs say 'nobody' themselves"),  # an empty view
        (" known", "reserved"),  # everyone, in metrics with identities hidden
        ("STRANGER", "reserved: facewatch's outputs say 'stranger'"),  # Home Assistant's people
        ("x" * 101, "longer than 100"),
        ("Jos\udce9", "'Jos\ufffd' is not valid UTF-8"),  # a Latin-1 folder name's bytes
    ]:
        with pytest.raises(GalleryError, match=reason):
            gallery.enroll([Enrollment(bad, axis(4), "bad")])
        with pytest.raises(GalleryError, match=reason):
            gallery.rename("bob", bad)
    assert gallery.remove(nfd) == 2  # found by either spelling
    with pytest.raises(GalleryError, match="already called"):
        gallery.rename("bob", " bob")


def test_names_that_look_alike_are_one_person(gallery) -> None:
    """A name pasted from a web page or a spreadsheet (no-break space, a zero-width space or
    BOM along with it) or typed with a doubled space is the person already enrolled, not a
    second one under the same visible name; full-width letters or invisible characters that
    only make a name look like another's are refused, like a name in another case."""
    gallery.enroll([Enrollment("Ada Lovelace", axis(3), "ada0")])
    same = [
        "Ada\u00a0Lovelace",
        "Ada  Lovelace",
        "Ada\u3000Lovelace",
        "Ada Lovelace\u200b",
        "\ufeffAda Lovelace",
        " \u200bAda \u00a0Lovelace\u2060 ",
    ]
    for k, name in enumerate(same, 1):
        assert gallery.enroll([Enrollment(name, unit(0, 0, 0, 1, 0.01 * k), f"ada{k}")]) == 1
    assert [(i.name, i.embeddings) for i in gallery.identities() if "Ada" in i.name] == [
        ("Ada Lovelace", 1 + len(same))
    ]
    for twin in ["\uff21\uff44\uff41 Lovelace", "ADA LOVELACE", "Ada Love\u00adlace"]:
        with pytest.raises(GalleryError, match=r"'Ada Lovelace' is enrolled; .* another person"):
            gallery.enroll([Enrollment(twin, axis(4), "twin")])
    with pytest.raises(GalleryError, match="'alice' is enrolled"):
        gallery.rename("bob", "\uff41lice")
    for hiding in ["Ada\u202eecalevoL", "Ada\u2066x\u2069", "Ada\u2029L", "Ada\u200bL", "A\ufeffL"]:
        with pytest.raises(GalleryError, match="invisible or text-reordering characters"):
            gallery.enroll([Enrollment(hiding, axis(4), "hiding")])
        with pytest.raises(GalleryError, match="invisible or text-reordering characters"):
            gallery.rename("bob", hiding)
    for reserved in ["unknown\u200b", "\uff55nknown", "un\u00adknown"]:
        with pytest.raises(GalleryError, match="reserved"):
            gallery.enroll([Enrollment(reserved, axis(4), "reserved")])
    scientist = "\U0001f469\u200d\U0001f52c Marie"  # a joiner makes one emoji of two: kept
    gallery.enroll([Enrollment(scientist, axis(4), "m1")])
    assert scientist in [i.name for i in gallery.identities()]
    assert gallery.remove("Ada\u00a0 Lovelace") == 1 + len(same)  # found by any of them


def test_one_photo_belongs_to_one_person(gallery) -> None:
    with pytest.raises(GalleryError, match="already enrolled as 'bob'; nothing was enrolled"):
        gallery.enroll([Enrollment("dave", axis(3), "d1"), Enrollment("joe", axis(1), "b1")])
    assert {i.name for i in gallery.identities()} == {"alice", "bob", "carol"}
    assert gallery.sources()["b1"] == {"bob"}
    # one photo under two new names in one enroll (folders dave/ and joe/ holding one file)
    with pytest.raises(GalleryError, match="'joe' is already enrolled as 'dave'; nothing"):
        gallery.enroll([Enrollment("dave", axis(3), "d1"), Enrollment("joe", axis(3), "d1")])
    assert {i.name for i in gallery.identities()} == {"alice", "bob", "carol"}


def test_a_folder_and_a_foreign_sqlite_file_are_named(tmp_path) -> None:
    with pytest.raises(GalleryError, match="a folder, not a gallery file"):
        Gallery.open(tmp_path)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.commit()
    conn.close()
    with pytest.raises(GalleryError, match=r"not a facewatch gallery \(no model_id"):
        Gallery.open(other)


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _skip_unless_nobody_runs_python() -> None:
    """Skips where user nobody may not run this Python (one whose libpython lies under
    /root, as pyenv's do): it would fail before facewatch is reached."""
    done = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        pytest.skip(f"user nobody cannot run {sys.executable}: {done.stderr.strip()[:200]}")


def test_a_read_only_folder_is_named(gallery) -> None:
    """SQLite writes its journal beside the file: a writable file in a folder we may not write
    is refused up front, naming the folder (as a normal user: root writes anywhere)."""
    path = gallery.path
    gallery.close()
    if os.geteuid() != 0:
        os.chmod(path.parent, 0o500)
        try:
            with pytest.raises(GalleryError, match=r"its folder .* is not writable"):
                Gallery.open(path, MODEL, writable=True)
        finally:
            os.chmod(path.parent, 0o700)
        return
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv to drop to a normal user")
    _skip_unless_nobody_runs_python()
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # tmp_path's parents are root-only
    try:
        shutil.copy(path, folder / "g.sqlite")
        os.chown(folder / "g.sqlite", 65534, 65534)
        os.chmod(folder, 0o755)  # root's folder: nobody may read it, not write it
        code = f"from daemon.gallery import Gallery; Gallery.open({str(folder / 'g.sqlite')!r}, writable=True)"  # fmt: skip
        done = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", code],
            capture_output=True, text=True, cwd=Path(__file__).parents[2], timeout=300,
        )  # fmt: skip
        assert done.returncode != 0 and "is not writable" in done.stderr, done.stderr
    finally:
        shutil.rmtree(folder)


def gallery_cli(path: Path, capsys, *args: str) -> tuple[int, str, str]:
    """`facewatch gallery ARGS --gallery PATH` (these commands need no model)."""
    from daemon.cli import main

    try:
        code = main(["gallery", *args, "--gallery", str(path)])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_export_never_overwrites_by_accident(gallery, capsys) -> None:
    path = gallery.path
    gallery.close()
    target = path.with_name("people.json")
    target.write_text("precious")
    os.chmod(target, 0o644)
    code, _, err = gallery_cli(path, capsys, "export", str(target))
    assert code == 1 and "already exists; pass --force" in err
    assert target.read_text() == "precious"
    code, _, err = gallery_cli(path, capsys, "export", str(path.with_suffix(".json")))
    assert code == 0 and stat.S_IMODE(path.with_suffix(".json").stat().st_mode) == 0o600
    code, _, _ = gallery_cli(path, capsys, "export", str(target), "--force")
    assert code == 0 and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert {p["name"] for p in json.loads(target.read_text())["identities"]} == {"alice", "bob", "carol"}  # fmt: skip
    twin = path.with_name("twin.json")
    os.link(path, twin)  # the gallery under an export's name: refused even with --force
    code, _, err = gallery_cli(path, capsys, "export", str(twin), "--force")
    assert code == 1 and "the gallery itself" in err
    code, _, err = gallery_cli(path, capsys, "export", str(path.parent / "no" / "x.json"))
    assert code == 1 and "no folder" in err
    with Gallery.open(path) as untouched:
        assert untouched.identities()
    assert not list(path.parent.glob(".*.part"))


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_an_export_imports_back_whole_as_a_backup(gallery, capsys, suffix) -> None:
    """The backup a corrupt gallery's message points to: an export restores the people,
    their faces and thresholds into a new gallery; importing twice adds nothing; a gallery
    of another model refuses it, and a file that is no export is named."""
    path = gallery.path
    gallery.set_threshold("bob", 0.5)
    gallery.set_threshold(None, 0.9)
    gallery.close()
    # (enrolled long ago: `gallery list NAME` shows when)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE embeddings SET created = '2020-01-02T03:04:05+00:00' WHERE id = 1")
    gallery = Gallery.open(path, MODEL)
    before = (gallery.identities(), gallery.embeddings())
    gallery.close()
    backup = path.with_name(f"backup{suffix}")
    assert gallery_cli(path, capsys, "export", str(backup))[0] == 0
    restored = path.with_name("restored.sqlite")
    code, out, err = gallery_cli(restored, capsys, "import", str(backup))
    assert code == 0, err
    assert "imported 4 new embedding(s) of 3 person(s)" in out and "a new gallery" in out
    with Gallery.open(restored, MODEL) as again:
        assert again.threshold == 0.9 and again.embedding_size == D
        people = {i.name: (i.threshold, i.embeddings) for i in again.identities()}
        assert people == {p.name: (p.threshold, p.embeddings) for p in before[0]}
        vectors, owners, sources, created = again.embeddings()
        np.testing.assert_array_equal(vectors, before[1][0])
        assert (owners, sources) == (before[1][1], before[1][2])
        assert created == before[1][3], "each face's enroll time, as the export has it"
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    code, out, _ = gallery_cli(restored, capsys, "import", str(backup))
    assert code == 0 and "imported 0 new embedding(s)" in out
    other = Gallery.create(path.with_name("other.sqlite"), "another-model@sha256:1", D)
    other.close()
    code, _, err = gallery_cli(other.path, capsys, "import", str(backup))
    assert code == 1 and "another-model" in err, err
    junk = path.with_name(f"junk{suffix}")
    for content in (
        b"",
        b"{}" if suffix == ".json" else b"PK not an npz",
        backup.read_bytes()[:200],
    ):
        junk.write_bytes(content)  # empty, something else, cut short
        code, _, err = gallery_cli(restored, capsys, "import", str(junk))
        assert code == 1 and f"{junk}: not a gallery export" in err, (content[:20], err)


def _export_json(path: Path, **changes) -> Path:
    """A one-person JSON export as `gallery export` writes it, with ``changes`` to its header
    (``person_threshold``: to the person's own threshold)."""
    person = {"name": "ann", "threshold": changes.pop("person_threshold", None),
              "embeddings": [{"vector": [0.5] * 4 + [0.0] * (D - 4), "source_sha256": "ab"}]}  # fmt: skip
    record = {"format": "facewatch-gallery", "version": 1, "model_id": MODEL,
              "embedding_size": D, "threshold": 1.0, "identities": [person], **changes}  # fmt: skip
    path.write_text(json.dumps(record))  # Infinity and NaN as Python's json writes them
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": float("inf")}, "default threshold inf is not a finite number"),
        ({"threshold": float("nan")}, "default threshold nan is not a finite number"),
        ({"threshold": -3}, "default threshold -3 outside (0, 4]"),
        ({"threshold": 0}, "default threshold 0 outside (0, 4]"),
        ({"threshold": 4.5}, "default threshold 4.5 outside (0, 4]"),
        ({"threshold": 10**400}, "default threshold 1000"),
        ({"threshold": "0.9"}, "default threshold '0.9' is not a finite number"),
        ({"person_threshold": float("inf")}, "'ann': threshold inf is not a finite"),
        ({"person_threshold": 7}, "'ann': threshold 7 outside (0, 4]"),
    ],
)  # fmt: skip
def test_an_export_with_a_threshold_no_gallery_takes_is_not_imported(
    tmp_path, capsys, changes, message
) -> None:
    """An export's default threshold of inf (every stranger named), NaN or -3 (nobody named)
    made a new gallery with it; a 400-digit one was a traceback. Now the rule of `gallery
    threshold` refuses them, naming the file, and no gallery is made."""
    export = _export_json(tmp_path / "people.json", **changes)
    target = tmp_path / "new.sqlite"
    code, out, err = gallery_cli(target, capsys, "import", str(export))
    assert code == 1 and f"error: {export}: {message}" in err, (out, err)
    assert not target.exists()
    with pytest.raises(GalleryError, match=r"new.sqlite: default threshold inf outside"):
        Gallery.create(target, MODEL, D, threshold=float("inf"))
    assert not target.exists()


def _npz(path: Path, compression: int = zipfile.ZIP_DEFLATED, **arrays: np.ndarray | bytes) -> Path:
    """An .npz export of one person with ``arrays`` in place of its own (bytes: the .npy
    file itself)."""
    header = {"model_id": MODEL, "embedding_size": D, "threshold": 1.0}
    members = {"vectors": np.eye(1, D, dtype=np.float32), "names": np.array(["ann"]),
               "source_sha256": np.array(["ab"]), "identity_names": np.array(["ann"]),
               "identity_thresholds": np.array([np.nan], np.float32),
               "header": np.array(json.dumps(header)), **arrays}  # fmt: skip
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, value in members.items():
            if isinstance(value, np.ndarray):
                buffer = io.BytesIO()
                np.save(buffer, value)
                value = buffer.getvalue()
            archive.writestr(f"{name}.npy", value)
    return path


def _patched(path: Path, member: str, where: str, value: int) -> Path:
    """``path`` with one byte of ``member`` changed: its first compressed byte ("data"), or
    the flags or compression method of its entry in the zip's central directory."""
    blob = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo(member)
    local = info.header_offset
    if where == "data":
        names = int.from_bytes(blob[local + 26 : local + 28], "little")
        extra = int.from_bytes(blob[local + 28 : local + 30], "little")
        blob[local + 30 + names + extra] = value
    else:
        entry = blob.rindex(member.encode()) - 46  # its name's last copy: in the directory
        assert blob[entry : entry + 4] == b"PK\x01\x02"
        blob[entry + {"flags": 8, "method": 10}[where]] = value
    path.write_bytes(bytes(blob))
    return path


def _declaring(shape: tuple[int, ...]) -> bytes:
    """An .npy file whose header declares ``shape`` (float64) and that holds 64 bytes."""
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(64)


HOSTILE_EXPORTS = {
    "deep.json": lambda p: p.write_text('{"format": "facewatch-gallery", "version": 1, "x": ' + "[" * 100000 + "]" * 100000 + "}"),
    "size.json": lambda p: _export_json(p, embedding_size=float("inf")),
    "float.json": lambda p: _export_json(p, embedding_size=4.9),
    "digits.json": lambda p: p.write_text(_export_json(p).read_text().replace("0.5", "1" + "0" * 400, 1)),
    "beyond.json": lambda p: p.write_text(_export_json(p).read_text().replace("0.5", "1e39")),
    "long.json": lambda p: p.write_text(_export_json(p).read_text().replace("0.5", "1e30")),
    "long.npz": lambda p: _npz(p, vectors=np.full((1, D), 1e3)),
    "number.json": lambda p: p.write_text(_export_json(p).read_text().replace('"ann"', "5")),
    "latin1.json": lambda p: p.write_bytes(_export_json(p).read_bytes().replace(b"ann", b"\xe9")),
    "declares-exabytes.npz": lambda p: _npz(p, vectors=_declaring((10**9, 10**9))),
    "bomb.npz": lambda p: _npz(p, vectors=np.zeros((200_000, D)), names=np.array(["ann"] * 200_000), source_sha256=np.array(["ab"] * 200_000)),
    "deflate.npz": lambda p: _patched(_npz(p), "vectors.npy", "data", 0xFF),
    "encrypted.npz": lambda p: _patched(_npz(p), "vectors.npy", "flags", 1),
    "method.npz": lambda p: _patched(_npz(p), "vectors.npy", "method", 99),
    "deep.npz": lambda p: _npz(p, zipfile.ZIP_STORED, header=np.array("[" * 100000)),
    "infinite.npz": lambda p: _npz(p, identity_thresholds=np.array([np.inf], np.float32)),
    "strings.npz": lambda p: _npz(p, vectors=np.array([["1"] * D])),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HOSTILE_EXPORTS))
def test_a_damaged_or_hostile_export_is_named_not_a_traceback(tmp_path, name) -> None:
    """The fuzzing review's exports: OverflowError, RecursionError, MemoryError (exabytes
    declared in a few bytes), zlib.error, NotImplementedError, RuntimeError, or a zip bomb
    read whole (800 MB from 0.8 MB). Now one GalleryError naming the file, read before any
    array is allocated beyond 16x the file's size."""
    path = tmp_path / name
    HOSTILE_EXPORTS[name](path)
    with pytest.raises(GalleryError) as error:
        gallery_export.read(path)
    assert str(error.value).startswith(f"{path}: "), error.value
    assert len(str(error.value)) < 300


def test_threshold_of_a_person_and_the_default(gallery, capsys) -> None:
    path = gallery.path
    gallery.close()
    assert gallery_cli(path, capsys, "threshold", "--default", "0.9")[0] == 0
    assert gallery_cli(path, capsys, "threshold", "bob", "0.5")[0] == 0
    with Gallery.open(path) as reader:
        assert reader.threshold == 0.9
        assert {i.name: i.threshold for i in reader.identities()}["bob"] == 0.5
    assert gallery_cli(path, capsys, "threshold", "bob", "default")[0] == 0
    assert gallery_cli(path, capsys, "threshold", "bob")[0] == 2  # no value
    assert gallery_cli(path, capsys, "threshold", "--default", "bob", "1")[0] == 2
    code, _, err = gallery_cli(path, capsys, "threshold", "--default", "default")
    assert code == 2 and "not a number" in err
    code, _, err = gallery_cli(path, capsys, "threshold", "--default")
    assert code == 2 and "gallery threshold --default VALUE" in err
    code, _, err = gallery_cli(path, capsys, "threshold", "bob", "5")
    assert code == 2 and "threshold 5 outside (0, 4]" in err
    with Gallery.open(path) as reader:
        assert {i.name: i.threshold for i in reader.identities()}["bob"] is None


def test_a_default_threshold_the_configs_threshold_overrides_says_so(gallery, capsys) -> None:
    """`gallery threshold --default 0.12 --config fw.yaml` said 'default threshold 0.12',
    and the daemon of fw.yaml went on matching with its recognition.threshold 0.3: the
    command says so, and when the default would apply."""
    from daemon.cli import main

    path = gallery.path
    gallery.close()
    config = path.parent / "fw.yaml"
    config.write_text(
        "cameras: [{name: door, url: 'rtsp://h/1'}]\n"
        f"recognition: {{gallery: {path.name}, threshold: 0.3}}\n"
    )
    assert main(["gallery", "threshold", "--default", "0.12", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"default threshold 0.12 in {path}\n"
        f"note: the daemon matches with recognition.threshold 0.300 of {config}, not with the "
        "gallery's default: the default applies once that key is removed from it (then "
        "systemctl restart facewatch)\n"
    ), out
    with Gallery.open(path) as reader:
        assert reader.threshold == 0.12  # stored all the same
    assert main(["gallery", "calibrate", "--dry-run", "--force", "--config", str(config)]) == 0
    assert "note: the daemon matches with recognition.threshold 0.300 " in capsys.readouterr().out
    config.write_text(config.read_text().replace(", threshold: 0.3", ""))
    assert main(["gallery", "threshold", "--default", "0.2", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"default threshold 0.2 in {path}\n"


@pytest.mark.parametrize(
    ("overall", "yard", "said"),
    [
        (", threshold: 0.3", "", "the daemon matches with recognition.threshold 0.300 of {config}, "
         "and with cameras[door].recognition.threshold 0.250 at those cameras, not with the "
         "gallery's default: the default applies once those keys are removed from it"),
        ("", "", "the daemon matches with cameras[door].recognition.threshold 0.250 of {config} "
         "at those cameras, not with the gallery's default (the other cameras do): the default "
         "applies once that key is removed from it"),
        ("", ", enabled: false", "no camera matches with the gallery's default: each has its own "
         "threshold in {config} (cameras[door].recognition.threshold 0.250): the default applies "
         "once that key is removed from it"),
        (", threshold: 0.3", ", recognition: {threshold: 0.2}", "no camera matches with the "
         "gallery's default: each has its own threshold in {config} (cameras[door].recognition."
         "threshold 0.250, cameras[yard].recognition.threshold 0.200, over recognition.threshold "
         "0.300): the default applies once those keys are removed from it"),
    ],
)  # fmt: skip
def test_a_default_threshold_the_cameras_own_override_says_so(
    gallery, capsys, overall, yard, said
) -> None:
    """With cameras[door].recognition.threshold 0.25, `gallery threshold --default` said the
    daemon matched at recognition.threshold 0.300 (door matches at 0.25), or nothing at all
    where no recognition.threshold was set (the default applied at no camera)."""
    from daemon.cli import main

    path = gallery.path
    gallery.close()
    config = path.parent / "fw.yaml"
    config.write_text(
        "cameras: [{name: door, url: 'rtsp://h/1', recognition: {threshold: 0.25}},\n"
        f"          {{name: yard, url: 'rtsp://h/2'{yard}}}]\n"
        f"recognition: {{gallery: {path.name}{overall}}}\n"
    )
    assert main(["gallery", "threshold", "--default", "0.12", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"default threshold 0.12 in {path}\n"
        f"note: {said.format(config=config)} (then systemctl restart facewatch)\n"
    ), out


def test_calibrate_refuses_a_threshold_that_misses_its_target(tmp_path, capsys) -> None:
    path = tmp_path / "g.sqlite"
    with Gallery.create(path, MODEL, D) as g:
        # every face of one person is as near another person as its own: no threshold
        # separates them
        g.enroll(
            [
                Enrollment("ann", axis(0), "a1"),
                Enrollment("ann", unit(1, 1), "a2"),
                Enrollment("ben", unit(1, 0.01), "b1"),
                Enrollment("ben", unit(0.01, 1), "b2"),
            ]
        )
    code, out, err = gallery_cli(path, capsys, "calibrate", "--target-far", "0.1", "--force")
    assert code == 1 and "that threshold would reject every enrolled person" in err
    assert "expected FAR" in out
    with Gallery.open(path) as reader:
        assert reader.threshold == DEFAULT_THRESHOLD
    assert gallery_cli(path, capsys, "calibrate", "--target-far", "1.5")[0] == 2


def test_calibrate_stores_nothing_from_too_few_faces_to_measure_the_target(
    tmp_path, capsys
) -> None:
    """Four faces cannot show a false-accept rate of 1 %: the threshold they give is the
    distance between the two closest people, which strangers pass. Stored only on --force."""
    path = tmp_path / "g.sqlite"
    with Gallery.create(path, MODEL, D) as g:  # two people, well apart
        g.enroll(
            [
                Enrollment("ann", axis(0), "a1"),
                Enrollment("ann", unit(1, 0.1), "a2"),
                Enrollment("ben", axis(2), "b1"),
                Enrollment("ben", unit(0, 0, 1, 0.1), "b2"),
            ]
        )
    for far in ("0.01", "0"):
        code, out, err = gallery_cli(path, capsys, "calibrate", "--target-far", far)
        assert code == 1 and "impostor trials (4 faces) cannot measure a false-accept rate" in err
        assert f"the gallery keeps its threshold, {DEFAULT_THRESHOLD:.4f}" in err
    assert "that needs 100 or more" in gallery_cli(path, capsys, "calibrate")[2]
    with Gallery.open(path) as reader:
        assert reader.threshold == DEFAULT_THRESHOLD
    code, out, _ = gallery_cli(path, capsys, "calibrate", "--force")
    assert code == 0 and "stored as the default" in out
    # no trial below the threshold is a rate under 1 in N, not 0 %
    assert "expected FAR under 1 in 3 (none of 3 impostor trials below it), FRR" in out
    with Gallery.open(path) as reader:
        assert reader.threshold != DEFAULT_THRESHOLD


def test_calibrate_reports_the_false_accepts_it_counted(tmp_path, capsys) -> None:
    """The expected FAR is shown with its count of impostor trials (1 of N), and the
    closest two people are one trial of them."""
    vectors, owners = _people(70, 2)
    vectors[2] = vectors[0] + 0.02 * vectors[3]
    vectors[2] /= np.linalg.norm(vectors[2])
    path = tmp_path / "g.sqlite"
    with Gallery.create(path, MODEL, vectors.shape[1]) as g:
        g.enroll(
            [
                Enrollment(o, v, f"s{k}")
                for k, (o, v) in enumerate(zip(owners, vectors, strict=True))
            ]
        )
    code, out, err = gallery_cli(path, capsys, "calibrate", "--dry-run")
    trials = calibrate(vectors, owners).impostor
    assert code == 0, err
    assert f"140 faces (140 with another face of the same person), leave-one-out: {trials} " in out
    assert f"expected FAR {1 / trials:.2%} (1 of {trials} impostor trials below it)" in out


def test_calibrate_refuses_a_threshold_that_turns_away_the_enrolled_and_names_the_twins(
    tmp_path, capsys
) -> None:
    """One person enrolled twice, as p0 and p0-again: their faces are each other's nearest
    impostors, so the threshold that keeps 1 % FAR turns away half of everyone's own faces.
    Not stored without --force, and p0 and p0-again are named, --dry-run too."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 64))
    vectors = np.concatenate(
        [c + 0.3 * rng.normal(size=(3, 64)) for c in centres]
        + [centres[0] + 0.3 * rng.normal(size=(6, 64))]
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owners = [f"p{k}" for k in range(40) for _ in range(3)] + ["p0-again"] * 6
    path = tmp_path / "g.sqlite"
    with Gallery.create(path, MODEL, 64) as g:
        g.enroll(
            [
                Enrollment(o, v, f"s{k}")
                for k, (o, v) in enumerate(zip(owners, vectors, strict=True))
            ]
        )
    for dry_run in (["--dry-run"], []):
        code, out, err = gallery_cli(path, capsys, "calibrate", *dry_run)
        assert code == 1 and "FRR 50.00%" in out, out
        assert "would turn away 50.0% of the enrolled people's own faces (more than 30%)" in err
        assert "or two names are one person" in err and "--force stores it anyway" in err
        twins = out.split("people whose nearest faces are nearer each other than the threshold")[1]
        assert twins.split("\n")[1].startswith("  p0 and p0-again: nearest faces 0.1")
        assert "nearer than their own faces (0.1" in twins and "): the same person?" in twins
    with Gallery.open(path) as reader:
        assert reader.threshold == DEFAULT_THRESHOLD
    code, out, _ = gallery_cli(path, capsys, "calibrate", "--force")
    assert code == 0 and "stored as the default" in out
    with Gallery.open(path) as reader:
        assert reader.threshold < 0.2


def test_names_stored_before_normalisation_are_still_found(gallery) -> None:
    """An older facewatch stored names as typed: a macOS (NFD) folder name, trailing spaces."""
    path = gallery.path
    gallery.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE identities SET name = ? WHERE name = 'bob'", ("Jose\u0301",))
    conn.execute("UPDATE identities SET name = ? WHERE name = 'carol'", ("Ada ",))
    conn.execute("UPDATE identities SET name = ? WHERE name = 'alice'", ("Grace\u00a0 Hopper",))
    conn.close()
    with Gallery.open(path, MODEL, writable=True) as g:
        assert g.enroll([Enrollment("Jos\u00e9", axis(5), "j2")]) == 1  # the same person
        assert g.enroll([Enrollment("Grace Hopper", axis(6), "g3")]) == 1  # and so is she
        assert g.knows("Grace Hopper") and not g.knows("Grace")
        assert len(g.identities()) == 3
        assert g.sources()["b1"] == {"Jos\u00e9"}
        g.set_threshold("Ada", 0.5)
        g.rename("Ada", "Ada Lovelace")
        g.rename("Grace Hopper", "Grace Hopper")  # spelt as she is found now
        assert g.remove("Jos\u00e9") == 2
        assert [(i.name, i.embeddings) for i in g.identities()] == [
            ("Ada Lovelace", 1),
            ("Grace Hopper", 3),
        ]


def test_lookalikes_enrolled_before_they_were_refused_are_each_found(gallery, capsys) -> None:
    """A gallery from before: 'Ada Lovelace' and 'Ada\\xa0Lovelace' as two people. Each is
    found by its own spelling, `gallery list` shows how they differ, and they keep two
    topics (person_key)."""
    path = gallery.path
    gallery.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE identities SET name = 'Ada Lovelace' WHERE name = 'bob'")
    conn.execute("UPDATE identities SET name = ? WHERE name = 'carol'", ("Ada\u00a0Lovelace",))
    conn.close()
    code, _, err = gallery_cli(path, capsys, "list")
    assert code == 0 and "'Ada Lovelace' and 'Ada\\xa0Lovelace' look alike" in err
    assert person_key("Ada Lovelace") != person_key("Ada\u00a0Lovelace")
    with Gallery.open(path, MODEL, writable=True) as g:
        assert g.match(axis(2)[None])[0].identity == "Ada\u00a0Lovelace"
        assert g.remove("Ada\u00a0Lovelace") == 1
        assert [i.name for i in g.identities()] == ["Ada Lovelace", "alice"]  # not the other


@pytest.mark.parametrize(
    ("older", "newer"),
    [("Ada\u00a0Lovelace", "Ada Lovelace"), ("Ada Lovelace", "Ada\u00a0Lovelace")],
)
def test_a_photo_enrolled_as_one_of_two_legacy_lookalikes_joins_that_one(
    gallery, older, newer
) -> None:
    """A gallery from before: 'Ada Lovelace' and 'Ada\\xa0Lovelace' as two people. A photo
    enrolled under either spelling joins the person of that spelling, as remove and rename
    find them, whichever of the two was enrolled first (the older one took every photo, and
    those photos then matched as the wrong name)."""
    path = gallery.path
    gallery.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE identities SET name = ? WHERE name = 'bob'", (older,))
    conn.execute("UPDATE identities SET name = ? WHERE name = 'carol'", (newer,))
    conn.close()
    with Gallery.open(path, MODEL, writable=True) as g:
        assert g.enroll([Enrollment("Ada Lovelace", axis(5), "n1")]) == 1
        assert g.enroll([Enrollment("Ada\u00a0Lovelace", axis(6), "n2")]) == 1
        photos = {i.name: {sha for _, sha in g.faces_of(i.name)} for i in g.identities()}
    enrolled = {"Ada Lovelace": "n1", "Ada\u00a0Lovelace": "n2"}
    assert photos == {
        older: {"b1", enrolled[older]},  # bob's row, the older
        newer: {"c1", enrolled[newer]},
        "alice": {"a1", "a2"},
    }


def test_twins_enrolled_before_case_was_checked_are_pointed_out(gallery, capsys) -> None:
    """A gallery from before: 'bob' and 'Bob' as two people. It still works, and `gallery
    list` says how to make them one."""
    path = gallery.path
    gallery.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE identities SET name = 'Bob' WHERE name = 'carol'")
    conn.close()
    code, out, err = gallery_cli(path, capsys, "list")
    assert code == 0 and "bob" in out and "Bob" in out
    assert "'Bob' and 'bob' look alike (they differ in case, " in err
    assert "but are 2 people here: `gallery remove` all but one" in err
    with Gallery.open(path, MODEL, writable=True) as g:
        assert g.enroll([Enrollment("Bob", axis(6), "B2")]) == 1  # each twin still takes photos


def test_a_loaded_gallery_matches_as_it_was_read_whatever_is_written_later(tmp_path) -> None:
    """The daemon loads a gallery whole when it (re)reads it: a file copied over it in place
    later (cp keeps the inode) is checked at the next reload, never matched against as the
    gallery loaded before (it once named people from a refused file)."""
    path, other = tmp_path / "g.sqlite", tmp_path / "other.sqlite"
    with Gallery.create(path, MODEL, D) as g:
        g.enroll([Enrollment("alice", axis(0), "a1")])
    with Gallery.create(other, MODEL, D) as g:
        g.enroll([Enrollment("mallory", axis(0), "m1"), Enrollment("bob", axis(1), "b1")])
    reader = Gallery.open(path, MODEL)
    assert reader.load() == ["alice"]
    path.write_bytes(other.read_bytes())  # in place, as `cp other.sqlite g.sqlite` does
    assert [m.identity for m in reader.match(np.stack([axis(0), axis(1)]))] == ["alice", None]
    reader.close()


@pytest.mark.parametrize(("who", "value"), [("bob", "inf"), (None, "-3")])
def test_a_gallery_holding_a_threshold_no_command_stores_is_refused_with_the_fix(
    gallery, who, value
) -> None:
    """An import by an older facewatch stored an export's threshold as it was: inf named
    every stranger bob. Matching against such a gallery is refused, saying how to mend it."""
    path = gallery.path
    gallery.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        if who is None:
            db.execute("UPDATE meta SET value = ? WHERE key = 'threshold'", (value,))
        else:
            db.execute("UPDATE identities SET threshold = ? WHERE name = ?", (float(value), who))
    with Gallery.open(path) as stored, pytest.raises(GalleryError) as error:
        stored.load()
    assert f"{path}: " in str(error.value) and "outside (0, 4]" in str(error.value)
    assert "facewatch gallery threshold" in str(error.value)


_VECTOR = "UPDATE embeddings SET vector = ? WHERE id = ?"
_META = "UPDATE meta SET value = ? WHERE key = ?"
DAMAGED_GALLERIES = {  # the fixture's rows: alice 1 and 2, bob 3, carol 4
    "short blob": (_VECTOR, (axis(0)[:7].tobytes(), 2), "alice's face 2 (of 2): 28 bytes, 32 expected"),
    "long blob": (_VECTOR, (np.tile(axis(1), 2).tobytes(), 3), "bob's face 1 (of 1): 64 bytes, 32 expected"),
    "one float": (_VECTOR, (np.float32(1).tobytes(), 4), "carol's face 1 (of 1): 4 bytes, 32 expected"),
    "text": (_VECTOR, ("hello", 4), "carol's face 1 (of 1): 'hello', not bytes, 32 expected"),
    "scaled": (_VECTOR, ((axis(1) * 10).tobytes(), 3), "bob's face 1 (of 1): has length 10, not a unit vector"),
    "zero": (_VECTOR, (np.zeros(D, np.float32).tobytes(), 3), "bob's face 1 (of 1): has length 0, not a unit vector"),
    "NaN": (_VECTOR, (np.full(D, np.nan, np.float32).tobytes(), 1), "alice's face 1 (of 2): holds values that are not finite"),
    "inf": (_VECTOR, (np.array([0, 1, 0, 0, 0, np.inf, 0, 0], np.float32).tobytes(), 3), "bob's face 1 (of 1): holds values that are not finite"),
    "size": (_META, ("16", "embedding_size"), "its embedding_size is 16, but every face holds 8 values"),
    "size text": (_META, ("x", "embedding_size"), "its embedding_size 'x' is not a positive whole number"),
    "default NaN": (_META, ("nan", "threshold"), "the default threshold nan outside (0, 4]"),
    "default text": (_META, ("abc", "threshold"), "the default threshold 'abc' is not a number"),
    "own text": ("UPDATE identities SET threshold = ? WHERE name = ?", ("abc", "bob"), "bob's threshold 'abc' is not a number"),
}  # fmt: skip


@pytest.mark.parametrize("case", DAMAGED_GALLERIES)
def test_a_damaged_gallery_is_refused_naming_the_person_and_what_is_wrong(
    gallery, capsys, case
) -> None:
    """A blob of the wrong length or type, or a text where a number belongs, stopped the
    daemon with a traceback (and every restart after it); a vector ten times too long named
    anyone near it at distance 0, a NaN made everyone unknown, a 4-byte blob was broadcast
    into a constant vector: all loaded without a word. Each is a GalleryError naming the
    file, the person and the fault; `gallery list` says it (exit 1), no traceback."""
    sql, params, expected = DAMAGED_GALLERIES[case]
    path = gallery.path
    gallery.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(sql, params)
    with pytest.raises(GalleryError) as error, Gallery.open(path) as stored:
        stored.load()
    assert str(error.value).startswith(f"{path}: {expected}"), error.value
    if case.startswith("default"):  # the default's, not the first person's
        assert "alice" not in str(error.value) and "--default VALUE" in str(error.value)
    code, out, err = gallery_cli(path, capsys, "list")
    assert (code, out, err.strip()) == (1, "", f"error: {error.value}")


def test_every_face_of_a_large_gallery_is_checked_at_once() -> None:
    """The checks run on the whole matrix (a gallery may hold tens of thousands of faces):
    the vectors come back as stored, and the damaged face found is the first one, with how
    many more there are."""
    from daemon.gallery_check import vectors_of

    rng = np.random.default_rng(0)
    stored = rng.standard_normal((5000, 128)).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    names = [f"p{k // 10:03d}" for k in range(len(stored))]
    blobs = [row.tobytes() for row in stored]
    read = vectors_of(Path("g.sqlite"), names, blobs, 128)
    assert read.dtype == np.float32 and read.flags.writeable and np.array_equal(read, stored)
    blobs[4321] = (stored[4321] * 1.01).tobytes()
    blobs[4999] = (stored[4999] * 0).tobytes()
    with pytest.raises(GalleryError, match=r"^g.sqlite: p432's face 2 \(of 10\) \(and 1 more "):
        vectors_of(Path("g.sqlite"), names, blobs, 128)


def _another_process_creates(monkeypatch, enrolled: list[Enrollment]) -> None:
    """Make the next gallery creation lose a race: just before it puts its finished file in
    place, another enroll or import puts its own gallery there (holding ``enrolled``)."""
    real_place = gallery_module.place

    def place_after_the_winner(scratch: Path, path: Path) -> None:
        monkeypatch.setattr(gallery_module, "place", real_place)
        winner = path.with_name("winner.sqlite")
        with Gallery.create(winner, MODEL, D, threshold=0.7) as theirs:
            theirs.enroll(enrolled)
        os.rename(winner, path)
        real_place(scratch, path)  # FileExistsError: the winner's is there

    monkeypatch.setattr(gallery_module, "place", place_after_the_winner)


def test_a_creation_that_loses_the_race_opens_the_gallery_just_made(tmp_path, monkeypatch) -> None:
    """Two enrolls making the first gallery at the same moment: the slower one said
    'already exists' (and its enroll then deleted the other's gallery). Now it opens the
    gallery the other made and enrolls into it."""
    path = tmp_path / "g.sqlite"
    _another_process_creates(monkeypatch, [Enrollment("ada", axis(0), "a1")])
    with Gallery.open_or_create(path, MODEL, D, threshold=0.5) as late:
        assert late.created is None and late.threshold == 0.7  # theirs, not a new one
        late.enroll([Enrollment("bob", axis(1), "b1")])
    with Gallery.open(path, MODEL) as both:
        assert [i.name for i in both.identities()] == ["ada", "bob"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.sqlite"]  # no scratch left
    with pytest.raises(GalleryError, match=r"g\.sqlite: already exists"):
        Gallery.create(path, MODEL, D)


def test_a_new_gallery_that_cannot_be_read_back_is_not_put_in_place(tmp_path, monkeypatch) -> None:
    """The new file, once written, is read back (its stamp tells later whether anyone wrote
    to it); a file that cannot be is an error that names it, and nothing is left behind
    (an assert failed, with the unstamped gallery already in place)."""
    path = tmp_path / "g.sqlite"
    monkeypatch.setattr(gallery_module, "file_stamp", lambda p: None)
    with pytest.raises(GalleryError) as error:
        Gallery.open_or_create(path, MODEL, D)
    scratch = tmp_path / f".g.sqlite.new-{os.getpid()}"
    assert str(error.value) == f"{path}: cannot create the gallery: {scratch} cannot be read back"
    assert list(tmp_path.iterdir()) == []


def test_an_import_into_a_gallery_made_meanwhile_is_no_new_gallery(gallery, capsys, monkeypatch) -> None:  # fmt: skip
    """`gallery import` said '(a new gallery ...)' from a look before the gallery was made
    (and failed with 'already exists' when another command made it first)."""
    path = gallery.path
    gallery.close()
    backup = path.with_name("backup.json")
    assert gallery_cli(path, capsys, "export", str(backup))[0] == 0
    target = path.with_name("target.sqlite")
    _another_process_creates(monkeypatch, [Enrollment("dave", axis(3), "d1")])
    code, out, err = gallery_cli(target, capsys, "import", str(backup))
    assert code == 0, err
    assert "imported 4 new embedding(s) of 3 person(s)" in out and "a new gallery" not in out
    with Gallery.open(target, MODEL) as merged:
        assert [i.name for i in merged.identities()] == ["alice", "bob", "carol", "dave"]
    code, out, _ = gallery_cli(path.with_name("fresh.sqlite"), capsys, "import", str(backup))
    assert code == 0 and "(a new gallery, threshold 1.100)" in out


def _person(name: str, threshold: float | None, vector: np.ndarray | None) -> dict:
    """One identity of a JSON export, with one face (None: none)."""
    faces = [] if vector is None else [{"vector": vector.tolist(), "source_sha256": name}]
    return {"name": name, "threshold": threshold, "embeddings": faces}


def test_an_import_is_one_transaction_with_its_thresholds(gallery, capsys) -> None:
    """An import wrote the faces, then each person's threshold in a transaction of its own:
    the daemon re-read the gallery in between and matched the new people at the default,
    and an import cut short there left faces without their thresholds. Now it is one
    commit, and an import refused at a threshold adds nothing."""
    path = gallery.path
    gallery.close()
    export = path.with_name("people.json")
    record = json.loads(_export_json(export, person_threshold=0.4).read_text())
    record["identities"].append(_person("zed", 0.3, axis(5)))
    export.write_text(json.dumps(record))
    commits = file_stamp(path)[4]
    code, out, err = gallery_cli(path, capsys, "import", str(export))
    assert code == 0 and "imported 2 new embedding(s) of 2 person(s)" in out, err
    assert file_stamp(path)[4] == commits + 1  # one write: faces and thresholds together
    with Gallery.open(path) as merged:
        assert {i.name: i.threshold for i in merged.identities()} == {
            "alice": None, "bob": None, "carol": None, "ann": 0.4, "zed": 0.3
        }  # fmt: skip
    before = file_stamp(path)
    record["identities"] = [_person("yan", None, axis(6)), _person("nobody", 0.5, None)]
    export.write_text(json.dumps(record))
    code, _, err = gallery_cli(path, capsys, "import", str(export))
    assert code == 1 and "no identity named 'nobody'" in err
    assert file_stamp(path) == before  # yan's face was not written either
    with Gallery.open(path) as unchanged:
        assert "yan" not in [i.name for i in unchanged.identities()]
    # the same refused import into a new gallery leaves no empty gallery behind
    fresh = path.with_name("fresh.sqlite")
    code, _, err = gallery_cli(fresh, capsys, "import", str(export))
    assert code == 1 and "no identity named 'nobody'" in err
    assert not fresh.exists()


def test_an_import_with_own_thresholds_does_not_read_every_identity_per_person(
    tmp_path,
) -> None:
    """An import set each person's own threshold after looking the person up by reading
    every identity: 5 s for 5,000 people (2 s without thresholds), a minute at 20,000. Now
    the identities are read a fixed number of times, however many people come."""
    rng = np.random.default_rng(0)
    people = [f"p{k}" for k in range(400)]
    vectors = rng.normal(size=(len(people), D)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Gallery.create(tmp_path / "g.sqlite", MODEL, D) as g:
        g.enroll([Enrollment("p0", axis(0), "old")])  # one already enrolled, one new
        statements: list[str] = []
        g._conn.set_trace_callback(statements.append)
        g.enroll(
            [Enrollment(n, v, n) for n, v in zip(people, vectors, strict=True)],
            dict.fromkeys(people, 0.12),
        )
        g._conn.set_trace_callback(None)
        assert {i.name: i.threshold for i in g.identities()} == dict.fromkeys(people, 0.12)
    reads = [s for s in statements if s.startswith("SELECT id, name FROM identities")]
    assert len(reads) <= 3, f"{len(reads)} reads of the identities"


def test_a_full_disk_is_said_plainly_and_the_gallery_kept(gallery) -> None:
    """On a full disk SQLite rolls the transaction back itself; the ROLLBACK after it failed
    with 'cannot rollback - no transaction is active' and a traceback hid the first error.
    (SQLite's own page limit fails the write with the very error a full disk gives.)"""
    before = (gallery.identities(), gallery.embeddings()[0])
    pages = gallery._conn.execute("PRAGMA page_count").fetchone()[0]
    gallery._conn.execute(f"PRAGMA max_page_count = {pages}")
    many = [Enrollment(f"p{k}", unit(1, k / 500), f"s{k}") for k in range(500)]
    with pytest.raises(GalleryError) as error:
        gallery.enroll(many)
    assert str(error.value).startswith(f"{gallery.path}: the disk is full: no space left")
    assert "nothing was changed: free some space" in str(error.value)
    assert gallery.identities() == before[0]
    np.testing.assert_array_equal(gallery.embeddings()[0], before[1])
    gallery.rename("bob", "rob")  # the connection still writes what fits
    assert gallery.knows("rob")


def test_a_gallery_on_a_read_only_mount_says_so_not_chmod(gallery, monkeypatch) -> None:
    """A gallery on a file system mounted read-only was told to `chmod u+w`, which cannot
    help there (a mount needs root to make, so statvfs stands in)."""
    path = gallery.path
    gallery.close()
    real_statvfs = os.statvfs
    monkeypatch.setattr(
        os,
        "statvfs",
        lambda p: SimpleNamespace(f_flag=real_statvfs(p).f_flag | os.ST_RDONLY),
    )
    with pytest.raises(GalleryError) as error:
        Gallery.open(path, MODEL, writable=True)
    assert str(error.value).startswith(f"{path}: the file system the gallery is on is mounted read-only")  # fmt: skip
    assert "chmod" not in str(error.value)
    with Gallery.open(path, MODEL) as reader:  # reading is fine
        assert len(reader.identities()) == 3


def _photos(folder: Path, *contents: bytes) -> list[Path]:
    """Photo files in ``folder`` (a face archive visit's, say) holding ``contents``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"face-{k}.jpg" for k in range(1, len(contents) + 1)]
    for path, content in zip(paths, contents, strict=True):
        path.write_bytes(content)
    return paths


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gallery_remove_photos_takes_only_the_faces_of_a_visit_enrolled_by_mistake(
    tmp_path, capsys, monkeypatch
) -> None:
    """Alex's visit enrolled under Lin: `gallery remove Lin --photos VISIT/` deletes the faces
    enrolled from its images and keeps Lin's own (only `gallery remove Lin` was there: every
    face went, and the running daemon deleted Lin's entities before an import put them
    back). A photo Lin has no face from is refused, naming it, and nothing goes; `gallery
    list Lin` shows each face's enroll time and photo, a batch sharing its time."""
    own = _photos(tmp_path / "lin", b"lin 1", b"lin 2", b"lin 3")
    mistake = _photos(tmp_path / "archive" / "144035-t3-unknown", b"alex 1", b"alex 2")
    (mistake[0].parent / "visit.json").write_text("{}")
    path = tmp_path / "g.sqlite"
    with Gallery.create(path, MODEL, D) as gallery:
        monkeypatch.setattr(gallery_write, "now_iso", lambda: "2026-12-01T14:40:36+00:00")
        gallery.enroll([Enrollment("Lin", axis(k), _sha(p)) for k, p in enumerate(own)])
        monkeypatch.setattr(gallery_write, "now_iso", lambda: "2026-12-01T14:41:02+00:00")
        gallery.enroll([Enrollment("Lin", axis(k + 3), _sha(p)) for k, p in enumerate(mistake)])
        gallery.enroll([Enrollment("Alex", axis(6), "x1")])
    monkeypatch.undo()
    code, out, _ = gallery_cli(path, capsys, "list", "Lin")
    assert code == 0 and out.splitlines()[0].startswith("Lin: 5 face(s), threshold default")
    assert f"  enrolled 2026-12-01T14:41:02+00:00  photo sha256 {_sha(mistake[1])}" in out
    assert out.count("enrolled 2026-12-01T14:40:36+00:00") == 3
    code, out, _ = gallery_cli(path, capsys, "list", "--json")
    [lin] = [p for p in json.loads(out)["identities"] if p["name"] == "Lin"]
    assert {"created": "2026-12-01T14:41:02+00:00", "source_sha256": _sha(mistake[0])} in lin["faces"]  # fmt: skip
    stranger = _photos(tmp_path / "other", b"nobody's")[0]
    code, _, err = gallery_cli(path, capsys, "remove", "Lin", "--photos", str(mistake[0].parent), str(stranger))  # fmt: skip
    assert code == 1 and f"no face of 'Lin' was enrolled from {stranger}; nothing was removed" in err  # fmt: skip
    code, out, err = gallery_cli(path, capsys, "remove", "Lin", "--photos", str(mistake[0].parent))
    assert code == 0, err
    assert "removed 2 face(s) of Lin enrolled from those photos; 3 remain" in out
    with Gallery.open(path) as gallery:
        assert {i.name: i.embeddings for i in gallery.identities()} == {"Alex": 1, "Lin": 3}
        assert gallery.sources_of("Lin") == {_sha(p) for p in own}
    # removed already
    code, _, err = gallery_cli(path, capsys, "remove", "Lin", "--photos", str(mistake[0]))
    assert code == 1 and f"no face of 'Lin' was enrolled from {mistake[0]}" in err
    code, out, _ = gallery_cli(path, capsys, "remove", "Lin", "--photos", str(own[0]), _sha(own[1]))  # fmt: skip
    assert code == 0 and "removed 2 face(s) of Lin enrolled from those photos; 1 remain" in out
    code, out, _ = gallery_cli(path, capsys, "remove", "Lin", "--photos", str(own[0].parent))
    assert code == 0 and "all of Lin's faces, so Lin is removed from the gallery" in out
    with Gallery.open(path) as gallery:
        assert [i.name for i in gallery.identities()] == ["Alex"]


def test_gallery_remove_photos_names_a_photo_of_someone_else_and_needs_real_photos(
    gallery, capsys, tmp_path
) -> None:
    path = gallery.path
    gallery.close()
    bob = _photos(tmp_path / "bob", b"bob's photo")[0]
    with Gallery.open(path, writable=True) as writer:
        writer.enroll([Enrollment("bob", unit(0.1, 1), _sha(bob))])
    code, _, err = gallery_cli(path, capsys, "remove", "alice", "--photos", str(bob))
    assert code == 1 and f"from {bob} (enrolled as bob); nothing was removed" in err
    (tmp_path / "empty").mkdir()
    code, _, err = gallery_cli(path, capsys, "remove", "alice", "--photos", str(tmp_path / "empty"))
    assert code == 1 and "no photos in this folder" in err
    code, _, err = gallery_cli(path, capsys, "remove", "alice", "--photos", str(tmp_path / "gone.jpg"))  # fmt: skip
    assert code == 1 and "gone.jpg: cannot be read (No such file or directory)" in err
    code, _, err = gallery_cli(path, capsys, "remove", "alice", "--photos", str(bob), "--forget")
    assert code == 2 and "--photos keeps the person, --forget removes them whole" in err
    with Gallery.open(path) as reader:
        assert {i.name: i.embeddings for i in reader.identities()} == {"alice": 2, "bob": 2, "carol": 1}  # fmt: skip


def test_a_first_enroll_refused_after_a_large_batch_leaves_no_gallery_file(tmp_path) -> None:
    """3,000 faces and then a name twin: SQLite wrote pages to the file before the refusal
    and put them back, its time changed, and the empty gallery the enroll had made was
    kept (the next enroll did not say 'a new gallery'). Only a commit or another process's
    file keeps it now."""
    path = tmp_path / "gallery.sqlite"
    gallery = Gallery.create(path, "m", 512)
    vectors = np.random.default_rng(0).normal(size=(3000, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    faces = [Enrollment(f"p{k}", v, f"s{k}") for k, v in enumerate(vectors)]
    with pytest.raises(GalleryError, match="'p1' is enrolled; 'P1' would be another person"):
        gallery.enroll([*faces, Enrollment("P1", vectors[0], "x")])
    assert gallery_module.remove_created(gallery) and not path.exists()
    gallery.close()
    with Gallery.create(path, "m", 512) as written:  # one face committed: kept
        written.enroll(faces[:1])
        assert not gallery_module.remove_created(written) and path.exists()
