"""`facewatch enroll | identify | gallery ...`: what a user sees, with a model the tests make
(random Inception-ResNet-v1 weights: mechanics only, never accuracy)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import cv2
import numpy as np
import pytest

from daemon import enroll_checks, enroll_run, enroll_summary
from daemon import gallery as gallery_module
from daemon.cli import main
from daemon.cli_models import Models
from daemon.config_file import parse_config
from daemon.gallery import Gallery, GalleryError
from daemon.gallery_write import Enrollment
from tests.conftest import REPO
from tests.face_folders import messy_folder

CELEBA_PEOPLE = 4
CELEBA_IMAGES = 3
HELD_OUT = 40  # CelebA identities training/cpu_job.sh keeps out of the shipped model's data
ENROLL_IMAGES = 5
# The shipped model's figures on the held-out people (the test prints them); the test fails
# while a model ships without them. dlib's converted ResNet (LFW 98.7 %), 2026-11-30, at the
# threshold a new gallery takes from its sidecar, LFW's for FAR 1e-3 (0.154, as the original
# FaceNet's validate reckons it; 0.152 before): rank-1 0.956 of 384, named as themselves
# 0.938, unknown rejection 0.890 of 344 (0.935 and 0.895 at 0.152). At LFW's best threshold
# (0.19), which new galleries took before, the rejection was 0.564: against 100 enrolled
# photos a stranger finds one that close 44 % of the time. For scale: the CPU recipe's
# 4-epoch model (LFW 71.3 %) measured rank-1 0.242, unknown rejection 0.015.
MEASURED_RANK1: float | None = 0.956
MEASURED_NAMED: float | None = 0.938
MEASURED_REJECTION: float | None = 0.890
MARGIN = 0.03


@pytest.fixture
def cli(test_model, tmp_path, capsys):
    """Run `facewatch ARGS` with the test model and a gallery in tmp_path."""
    gallery = tmp_path / "gallery.sqlite"

    def run(*args: str, model: bool = True) -> tuple[int, str, str]:
        extra = ["--gallery", str(gallery)]
        if model:
            extra += ["--model", str(test_model), "--threads", "2", "--no-progress"]
        try:
            code = main([*args, *extra])
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    run.gallery = gallery  # type: ignore[attr-defined]
    return run


def test_threads_are_bounded_as_detect_and_the_config_bound_them(cli) -> None:
    """identify and enroll take --threads 0..256, as detect and engines.threads do (they
    took any number of threads above 0)."""
    for command in (["identify"], ["enroll", "--name", "x"]):
        code, _, err = cli(*command, "--threads", "300", "photo.jpg", model=False)
        assert code == 2 and "argument --threads: must be >= 0 and <= 256, got 300" in err
    code, _, err = cli("identify", "--threads", "-1", "photo.jpg", model=False)
    assert code == 2 and "argument --threads: must be >= 0 and <= 256, got -1" in err


@pytest.fixture
def images(shared_data, tmp_path) -> dict[str, Path]:
    src = shared_data / "images"
    no_face = tmp_path / "wall.png"
    cv2.imwrite(str(no_face), np.full((200, 200, 3), 128, np.uint8))
    blurred = tmp_path / "blurred.jpg"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(cv2.imread(str(src / "obama2.jpg")), (0, 0), 8))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9")
    return {
        "obama": src / "obama2.jpg",
        "obama2": src / "obama3.jpg",
        "biden": src / "biden.jpg",
        "two": src / "two_people.jpg",
        "no_face": no_face,
        "blurred": blurred,
        "corrupt": corrupt,
    }


def test_a_dark_photo_is_noted_and_not_brightened_so_a_blurred_one_is_refused(
    cli, images, tmp_path
) -> None:
    """A dark photo (22 % of the light, a little sensor noise) is taken as it is, with a note
    to take photos in good light; a blurred one is refused as too blurry, as before dark
    photos were brightened (then its noise passed the sharpness check and it was enrolled)."""
    noise = np.random.default_rng(0)
    blurred = cv2.imread(str(images["blurred"]))
    dark = tmp_path / "night walker.png"
    cv2.imwrite(str(dark), np.clip(blurred * 0.22 + noise.normal(0, 2, blurred.shape), 0, 255))
    code, _, err = cli("enroll", "--name", "x", str(dark))
    assert code == 1 and f"{dark}: too blurry" in err, err
    note = "dark photo (its brightest part under grey 80 of 255): enroll photos in good light"
    assert f"note: {dark}: {note}" in err and not cli.gallery.exists()
    code, _, err = cli("enroll", "--name", "x", str(images["obama"]))
    assert code == 0 and "dark photo" not in err


def test_bad_images_are_rejected_with_reasons_and_nothing_written(cli, images) -> None:
    bad = ["no_face", "two", "corrupt", "blurred"]
    code, _, err = cli(
        "enroll", "--name", "x", str(images["obama"]), *(str(images[b]) for b in bad)
    )
    assert code == 1
    assert f"{images['no_face']}: no face found" in err
    assert f"{images['two']}: 2 faces found, expected exactly one" in err
    assert str(images["corrupt"]) in err
    assert f"{images['blurred']}: too blurry" in err
    assert "4 of 5 image(s) rejected; nothing was enrolled" in err
    assert not cli.gallery.exists()
    code, _, err = cli("enroll", "--name", "x", str(images["obama"]), "--min-face-px", "5000")
    assert code == 1 and "face too small" in err and not cli.gallery.exists()


def test_enroll_and_identify_warn_when_a_gallery_grows_past_120_faces_at_its_start(
    cli, images, test_model
) -> None:
    """A stranger is compared with every enrolled face: from 120 faces at the threshold a
    new gallery starts at, enroll and identify (once) say how many strangers the gallery
    would name, measured on its own faces (a fixed text named 14-34 %, where 1,565 people
    named 83 %; identify said nothing), and point to `gallery calibrate`; not below 120, not
    for a gallery that would name under 2 % of strangers (it said 'under 1% ...: run
    `facewatch gallery calibrate`'), and not once the user has set a threshold."""
    code, _, err = cli("enroll", "--name", "obama", str(images["obama"]))
    assert code == 0 and "warning: gallery" not in err, err
    with Gallery.open(cli.gallery, writable=True) as gallery:
        start, size = gallery.threshold, gallery.embedding_size
        others = np.random.default_rng(0).normal(size=(117, size))
        others /= np.linalg.norm(others, axis=1, keepdims=True)
        gallery.enroll([Enrollment(f"p{k % 10}", v, f"s{k}") for k, v in enumerate(others)])
    code, _, err = cli("enroll", "--name", "obama", str(images["obama2"]))
    assert code == 0 and "warning: gallery" not in err, err  # 119 faces of 11 people
    code, _, err = cli("enroll", "--name", "biden", "--largest", str(images["biden"]))
    assert code == 0 and "warning: gallery" not in err, err  # 120 faces far apart: none named
    photos = [str(images["obama"]), str(images["biden"])]
    assert "warning: gallery" not in cli("identify", *photos)[2]
    with Gallery.open(cli.gallery, writable=True) as gallery:  # 10 look-alikes, 2 faces each
        crowd = others[:1] + 0.01 * np.random.default_rng(1).normal(size=(20, size))
        crowd /= np.linalg.norm(crowd, axis=1, keepdims=True)
        gallery.enroll([Enrollment(f"q{k % 10}", v, f"c{k}") for k, v in enumerate(crowd)])
    again = cli.gallery.with_name("obama.png")  # the same photo in another file: a new face
    cv2.imwrite(str(again), cv2.imread(str(images["obama"])))
    code, _, err = cli("enroll", "--name", "obama", str(again))
    assert code == 0 and f"warning: gallery {cli.gallery}: 141 faces of 22 people" in err, err
    assert f"still at the threshold a new gallery starts at ({start:.3f}): at it " in err
    named = re.search(r"at it about \d+% of strangers would be named as one of your 22 people \(measured on your own faces, each of 141 taken as a stranger's", err)  # fmt: skip
    assert named, err
    assert "run `facewatch gallery calibrate`, which chooses a threshold" in err
    code, _, err = cli("identify", *photos)
    assert code == 0 and err.count("warning: gallery") == 1, err
    assert f"{cli.gallery}: 141 faces of 22 people" in err and named.group(0) in err
    # a config that sets recognition.threshold: the daemon matches with that one
    config = cli.gallery.with_name("facewatch.yaml")
    config.write_text(
        json.dumps(
            {
                "cameras": [{"name": "door", "url": "door.mp4"}],
                "recognition": {
                    "threshold": 0.12,
                    "gallery": str(cli.gallery),
                    "model": str(test_model),
                },
            }
        )
    )
    biden = str(images["biden"])
    code, _, err = cli("enroll", "--config", str(config), "--name", "biden", biden, model=False)
    assert code == 0 and "warning: gallery" not in err, err
    code, _, err = cli("identify", "--config", str(config), *photos, model=False)
    assert code == 0 and "warning: gallery" not in err, err
    assert cli("gallery", "threshold", "--default", "0.5", model=False)[0] == 0
    code, _, err = cli("enroll", "--name", "biden", str(images["two"]), "--largest")
    assert code == 0 and "warning: gallery" not in err, err
    assert "warning: gallery" not in cli("identify", *photos)[2]


def test_enroll_identify_and_the_gallery_commands(cli, images, tmp_path) -> None:
    code, out, err = cli("enroll", "--name", "obama", str(images["obama"]), str(images["obama2"]))
    assert code == 0, err
    assert "enrolled 2 new face(s) of 1 person(s)" in out
    assert out.splitlines()[0].endswith(": obama (new person)")
    assert stat.S_IMODE(cli.gallery.stat().st_mode) == 0o600
    code, out, err = cli("enroll", "--name", "biden", str(images["biden"]), str(images["two"]))
    assert code == 1 and "--largest" in err
    code, out, _ = cli("enroll", "--name", "biden", "--largest", str(images["biden"]))
    assert code == 0
    # a name as pasted from a web page (a no-break space, a zero-width space) is the person
    # enrolled, and the summary says no one is new
    code, out, _ = cli("enroll", "--name", "\u200bobama\u00a0", str(images["obama"]))
    assert code == 0 and "1 not added: already enrolled" in out and "new person" not in out

    annotated = tmp_path / "annotated"
    code, out, _ = cli("identify", "--json", "--annotate", str(annotated), str(images["obama"]), str(images["two"]))  # fmt: skip
    assert code == 0
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["source"] == str(images["obama"]) and len(first["image_hw"]) == 2
    face = first["faces"][0]
    keys = {"bbox_xyxy", "score", "landmarks", "identity", "distance", "confidence", "nearest"}
    keys |= {"runner_up", "runner_up_distance"}
    assert set(face) == keys
    assert face["identity"] == "obama" and face["distance"] < 1e-4  # the enrolled photo itself
    assert len(second["faces"]) == 2
    assert sorted(p.name for p in annotated.iterdir()) == ["obama2.jpg", "two_people.jpg"]
    code, out, _ = cli("identify", str(images["two"]))
    assert code == 0 and out.splitlines()[0] == f"{images['two']}: 2 face(s)"
    assert all(line.startswith("  face ") for line in out.splitlines()[1:])


def test_identify_notes_a_named_face_on_a_photo_smaller_than_the_daemons_min_face_px(
    cli, images, test_model
) -> None:
    """A frame taken from a camera's clip: identify named a 25-px face the daemon never
    named (recognition.min_face_px 30), with no hint why the two differ. With --config such
    a named face says so; the JSON is unchanged."""
    photo = str(images["obama"])
    assert cli("enroll", "--name", "obama", photo)[0] == 0
    config = cli.gallery.with_name("facewatch.yaml")
    recognition = {"gallery": str(cli.gallery), "model": str(test_model), "min_face_px": 10000}
    config.write_text(json.dumps({"cameras": [{"name": "door", "url": "door.mp4"}], "recognition": recognition}))  # fmt: skip
    code, out, err = cli("identify", "--config", str(config), photo, model=False)
    assert code == 0, err
    said = re.fullmatch(
        r"  face 1 \[[0-9 ]+\]: obama \(distance 0\.000\) \((\d+\.\d) px: smaller than "
        r"recognition\.min_face_px 10000, the daemon would not name it\)",
        out.splitlines()[1],
    )
    assert said, out
    code, out, err = cli("identify", "--json", "--config", str(config), photo, model=False)
    (face,) = json.loads(out)["faces"]
    keys = {"bbox_xyxy", "score", "landmarks", "identity", "distance", "confidence", "nearest"}
    assert set(face) == keys | {"runner_up", "runner_up_distance"}, "--json keeps its keys"
    x1, y1, x2, y2 = face["bbox_xyxy"]
    assert abs(float(said[1]) - min(x2 - x1, y2 - y1)) <= 0.05  # the box's shorter side


def test_the_min_face_px_identify_notes_is_the_daemons_for_that_camera() -> None:
    """--camera's own min_face_px where it has one, else recognition's; none without
    --config (no daemon to compare with), at 0 (every face matched), or for a face the
    photo did not name (the daemon would not name it either)."""
    from daemon.identify_cli import MinFace, _min_face, _too_small

    def config(px: float, own: float | None = None) -> Any:
        camera: dict[str, Any] = {"name": "door", "url": "door.mp4"}
        if own is not None:
            camera["recognition"] = {"min_face_px": own}
        return parse_config({"cameras": [camera], "recognition": {"min_face_px": px}})

    plain, door = config(30), config(30, own=40)
    assert _min_face(None, None) is None
    assert _min_face(plain, None) == MinFace(30, "recognition.min_face_px")
    assert _min_face(plain, plain.cameras[0]) == MinFace(30, "recognition.min_face_px")
    assert _min_face(door, None) == MinFace(30, "recognition.min_face_px")
    assert _min_face(door, door.cameras[0]) == MinFace(40, "camera door's recognition.min_face_px")
    assert _min_face(config(0), None) is None
    assert _min_face(config(30, own=0), config(30, own=0).cameras[0]) is None
    face = {"identity": "alex", "bbox_xyxy": [58.0, 185.0, 82.5, 221.0]}
    min_face = MinFace(30, "recognition.min_face_px")
    assert _too_small(face, min_face) == (
        " (24.5 px: smaller than recognition.min_face_px 30, the daemon would not name it)"
    )
    assert _too_small(face, MinFace(24.5, "x")) == ""  # as large as the minimum
    near = {"identity": "alex", "bbox_xyxy": [0.0, 0.0, 29.97, 40.0]}
    assert "(29.9 px: smaller than recognition.min_face_px 30," in _too_small(near, min_face)
    assert _too_small(face, None) == ""
    assert _too_small({**face, "identity": None}, min_face) == ""


def test_list_rename_remove_threshold_export(cli, images, tmp_path) -> None:
    assert cli("enroll", "--name", "obama", str(images["obama"]), str(images["obama2"]))[0] == 0
    assert cli("enroll", "--name", "biden", str(images["biden"]))[0] == 0
    code, out, _ = cli("gallery", "list", "--json", model=False)
    listed = json.loads(out)
    assert code == 0 and listed["model_id"].startswith("facenet-test-random@sha256:")
    assert [(p["name"], p["embeddings"]) for p in listed["identities"]] == [
        ("biden", 1),
        ("obama", 2),
    ]
    assert cli("gallery", "rename", "biden", "joe", model=False)[0] == 0
    assert cli("gallery", "threshold", "joe", "0.8", model=False)[0] == 0
    code, out, _ = cli("gallery", "list", model=False)
    assert "joe" in out and "biden" not in out and "threshold 0.800" in out
    code, _, err = cli("gallery", "remove", "nobody", model=False)
    assert code == 1 and "no identity named 'nobody'" in err

    code, out, _ = cli("gallery", "export", str(tmp_path / "g.json"), model=False)
    assert code == 0 and "(json)" in out
    exported = json.loads((tmp_path / "g.json").read_text())
    assert exported["embedding_size"] == 512 and len(exported["identities"]) == 2
    assert len(exported["identities"][1]["embeddings"][0]["vector"]) == 512
    assert stat.S_IMODE((tmp_path / "g.json").stat().st_mode) == 0o600
    assert cli("gallery", "export", str(tmp_path / "g.npz"), model=False)[0] == 0
    with np.load(tmp_path / "g.npz") as arrays:
        assert arrays["vectors"].shape == (3, 512) and list(arrays["names"]) == [
            "joe",
            "obama",
            "obama",
        ]
    code, _, err = cli("gallery", "export", str(tmp_path / "g.txt"), model=False)
    assert code == 1 and ".json" in err and ".npz" in err
    assert cli("gallery", "remove", "obama", model=False)[0] == 0


def test_enroll_folders_names_and_one_photo_one_person(cli, images, shared_data, tmp_path) -> None:
    people = tmp_path / "people"
    (people / "Ada Lovelace" / "2019").mkdir(parents=True)
    shutil.copy(images["obama"], people / "Ada Lovelace" / "2019" / "a.jpg")  # nested: found
    shutil.copy(images["obama"], people / "Ada Lovelace" / "._a.jpg")  # macOS metadata: skipped
    for junk in (".thumbnails", "@eaDir"):  # never people
        (people / junk).mkdir()
        shutil.copy(images["biden"], people / junk / "b.jpg")
    shutil.copy(images["biden"], people / "loose.jpg")
    code, out, err = cli("enroll", "--dir", str(people))
    assert code == 0, err
    assert "enrolled 1 new face(s) of 1 person(s)" in out and "Ada Lovelace" in out
    assert f"skipped {people / 'loose.jpg'}: not in a person's folder" in err
    # the same photo (same bytes, any file name) as another person: rejected, named
    code, _, err = cli("enroll", "--name", "Joe", str(images["obama"]))
    assert code == 1 and "the same photo is enrolled as Ada Lovelace" in err
    code, _, err = cli("enroll", "--name", "two\nlines", str(images["biden"]))
    assert code == 2 and "control characters" in err
    (people / "unknown").mkdir()
    code, _, err = cli("enroll", "--dir", str(people))
    assert code == 2 and f"{people / 'unknown'}: name 'unknown' is reserved" in err
    # a folder named with an escape sequence (this one clears the screen) is shown, not obeyed
    (people / "unknown").rename(people / "Ada\x1b[2J")
    code, _, err = cli("enroll", "--dir", str(people))
    assert code == 2 and f"{people}/Ada?[2J: name 'Ada\\x1b[2J': control" in err
    assert "\x1b" not in err
    assert cli("enroll", "--name", "x", str(images["biden"]), "--min-face-px", "-5")[0] == 2
    # a face cut off by the photo's edge makes a poor reference
    code, _, err = cli("enroll", "--name", "Obama", str(shared_data / "images" / "obama_partial_face.jpg"))  # fmt: skip
    assert code == 1 and "cut off by the photo's edge" in err
    assert [p["name"] for p in json.loads(cli("gallery", "list", "--json", model=False)[1])["identities"]] == ["Ada Lovelace"]  # fmt: skip


def test_a_person_kept_out_for_one_photo_is_said_with_how_many_were_rejected(
    cli, images, tmp_path
) -> None:
    """enroll --dir without --skip-bad, one of Pair's two photos showing two faces: Pair is
    kept out (the others are enrolled), said as 1 of 2 photos rejected (it said 2)."""
    people = tmp_path / "people"
    for who, photos in (("Lin", ["obama"]), ("Pair", ["biden", "two"])):
        (people / who).mkdir(parents=True)
        for photo in photos:
            shutil.copy(images[photo], people / who / images[photo].name)
    code, out, err = cli("enroll", "--dir", str(people))
    assert code == 1, err
    assert "not enrolled: Pair (1 of 2 photo(s) rejected)" in out, out
    assert "; 1 image(s) rejected; not enrolled" in out, out  # (not 'skipped': it was not)


def test_skip_bad_names_a_person_left_with_no_photo_and_fails(cli, images, tmp_path) -> None:
    """enroll --dir --skip-bad where Pair's only photo shows two faces: it said 'enrolled 1
    new face(s) of 1 person(s) ...; 1 image(s) skipped' and exited 0, Pair nowhere in the
    gallery (--name Pair --skip-bad exits 1). Now Pair is named in the summary and on stderr,
    and the exit status is 1. Someone in the gallery already whose new photo is rejected
    still has their faces: exit status 0."""
    people = tmp_path / "people"
    for who, photo in (("Lin", "obama"), ("Pair", "two")):
        (people / who).mkdir(parents=True)
        shutil.copy(images[photo], people / who / images[photo].name)
    code, out, err = cli("enroll", "--dir", str(people), "--skip-bad")
    assert code == 1
    assert "enrolled 1 new face(s) of 1 person(s)" in out
    assert out.splitlines()[0].endswith(
        "; 1 image(s) skipped; not enrolled: Pair (1 of 1 photo(s) rejected)"
    )
    assert "error: 1 person(s) not enrolled: Pair (1 of 1 photo(s) rejected)" in err
    assert "Lin" in cli("gallery", "list", model=False)[1]

    shutil.rmtree(people / "Pair")
    (people / "Lin" / images["obama"].name).unlink()
    shutil.copy(images["no_face"], people / "Lin")  # Lin's new photo: no face
    (people / "Joe").mkdir()
    shutil.copy(images["biden"], people / "Joe")
    code, out, err = cli("enroll", "--dir", str(people), "--skip-bad")
    assert code == 0, err
    assert "not enrolled" not in out + err and "1 image(s) skipped" in out


def _people(images: dict[str, Path], root: Path, who: dict[str, int], quality: int = 95) -> Path:
    """A --dir tree: each person's folder with that many photos, each of other bytes (the
    obama and biden photos saved again at other JPEG qualities, from ``quality`` down)."""
    for name, count in who.items():
        (root / name).mkdir(parents=True)
        for k in range(count):
            image = cv2.imread(str(images["obama" if k % 2 == 0 else "biden"]))
            cv2.imwrite(str(root / name / f"{k}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            quality -= 1
    return root


def test_enroll_dir_holds_a_chunk_of_crops_stores_as_it_goes_and_a_stop_keeps_them(
    cli, images, tmp_path, monkeypatch
) -> None:
    """enroll --dir held every crop to the end (4.9 GB for 5,528 photos), stored nothing
    until then, and Ctrl-C kept nothing and said only 'interrupted'; a rerun read every
    photo again. Now crops are embedded EMBED_CHUNK at a time, people stored every
    STORE_EVERY faces, Ctrl-C keeps those read whole and says where it stopped, and the
    same command again reads only the photos not enrolled yet."""
    people = _people(images, tmp_path / "people", {"A": 2, "B": 2, "C": 2, "D": 2})
    monkeypatch.setattr(enroll_run, "EMBED_CHUNK", 2)
    monkeypatch.setattr(enroll_run, "STORE_EVERY", 2)
    real_crop, alive, read, stored_then = enroll_checks.enroll_crop, [0], [], []
    peak = [0]

    def crop(models: Models, gates: Any, path: Path) -> np.ndarray:
        if path == people / "C" / "1.jpg" and not stored_then:  # C half read: Ctrl-C
            with Gallery.open(cli.gallery) as gallery:
                stored_then.extend(i.name for i in gallery.identities())
            raise KeyboardInterrupt
        read.append(path)
        out = real_crop(models, gates, path)
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(out, lambda: alive.__setitem__(0, alive[0] - 1))
        return out

    monkeypatch.setattr(enroll_run, "enroll_crop", crop)
    code, out, err = cli("enroll", "--dir", str(people), "--allow-mismatch")
    assert code == 130, err
    assert stored_then == ["A", "B"]  # stored before the end: a kill keeps them too
    assert "stopped by Ctrl-C at C (3 of 4); what was enrolled is kept: run the same " \
        "command again to go on" in err  # fmt: skip
    assert "enrolled 4 new face(s) of 2 person(s)" in out
    with Gallery.open(cli.gallery) as gallery:
        assert [i.name for i in gallery.identities()] == ["A", "B"]  # not C, half read
    assert peak[0] <= 3, peak  # a chunk (and the crop being read), not all 8

    read.clear()
    code, out, err = cli("enroll", "--dir", str(people), "--allow-mismatch")
    assert code == 0, err
    assert read == [people / p / f"{k}.jpg" for p in "CD" for k in (0, 1)]  # A, B not again
    assert "enrolled 4 new face(s) of 4 person(s)" in out
    assert "(4 not added: already enrolled, or the same photo twice)" in out


def test_names_alike_and_one_photo_in_two_folders_are_refused_before_any_photo_is_read(
    cli, images, tmp_path, monkeypatch
) -> None:
    """'Ada' beside 'ada' (or beside an enrolled 'Ada'), and the same photo in Bob's and
    Cy's folders: the whole run was read and embedded, then the gallery refused it all at
    its end (250 s of 1,659 people lost, even with --skip-bad), and a refused first enroll
    left an empty gallery file. Now they are refused before any photo is read; --skip-bad
    leaves out the folders (named at the end) and the photo, and enrolls the rest."""
    people = _people(images, tmp_path / "people", {"Ada": 1, "ada": 1, "Bob": 2, "Cy": 1})
    shutil.copy(people / "Bob" / "1.jpg", people / "Cy" / "1.jpg")
    read: list[Path] = []
    real_crop = enroll_checks.enroll_crop
    monkeypatch.setattr(enroll_run, "enroll_crop", lambda m, g, p: read.append(p) or real_crop(m, g, p))  # fmt: skip
    code, out, err = cli("enroll", "--dir", str(people))
    assert code == 1 and not out and not read and not cli.gallery.exists(), err
    assert "error: 2 problem(s) before any photo is read:" in err
    assert "\n  'Ada' and 'ada' differ in case, full-width or invisible characters only" in err
    assert f"\n  the same photo is given for {people / 'Bob' / '1.jpg'} (Bob), " \
        f"{people / 'Cy' / '1.jpg'} (Cy): one photo, one person" in err  # fmt: skip
    assert "\n  nothing was read or enrolled: rename such a folder, keep each photo in the " \
        "folder of the person it shows, or --skip-bad leaves them out" in err  # fmt: skip

    code, out, err = cli("enroll", "--dir", str(people), "--skip-bad")
    assert code == 1, err
    assert f"rejected: {people / 'Bob' / '1.jpg'}: the same photo is given for " \
        f"{people / 'Cy' / '1.jpg'} (Cy) too: one photo, one person" in err  # fmt: skip
    assert "skipped Ada: 'Ada' and 'ada' differ in case" in err
    assert "enrolled 2 new face(s) of 2 person(s)" in out and "Bob (new person)" in out
    assert "not enrolled: Ada (folder left out: its name only looks like another), ada (" in out
    assert people / "Ada" / "0.jpg" not in read
    # against the gallery: the enrolled spelling is kept, the other refused before reading
    read.clear()
    code, _, err = cli("enroll", "--name", "bob", str(images["obama"]))
    assert code == 1 and not read
    assert "'Bob' is enrolled, and --name 'bob' differs from it only in case" in err


def test_a_name_enrolled_in_another_case_is_named_with_the_spelling_to_give(cli, images) -> None:
    """--name ada with ADA enrolled: the refusal's advice was --dir's ('rename such a
    folder, ... or --skip-bad leaves them out'), and --skip-bad then said 'every folder left
    out'. Now it names the enrolled person and the two ways on (their exact spelling, or a
    clearly different name), with or without --skip-bad, and reads nothing."""
    assert cli("enroll", "--name", "Ada Lovelace", str(images["obama"]))[0] == 0
    for extra in ([], ["--skip-bad"]):
        code, out, err = cli("enroll", "--name", "ADA LOVELACE", str(images["obama2"]), *extra)
        assert code == 1 and not out, err
        assert "error: 'Ada Lovelace' is enrolled, and --name 'ADA LOVELACE' differs from it " \
            "only in case" in err  # fmt: skip
        assert "To add these photos to 'Ada Lovelace', give --name 'Ada Lovelace', its " \
            "enrolled spelling; for someone else, a name that differs in more than that" in err  # fmt: skip
        assert "folder" not in err and "--skip-bad" not in err, err
    with Gallery.open(cli.gallery) as gallery:
        assert [(i.name, i.embeddings) for i in gallery.identities()] == [("Ada Lovelace", 1)]
    code, out, _ = cli(
        "enroll", "--name", "Ada Lovelace", str(images["obama2"]), "--allow-mismatch"
    )
    assert code == 0 and "enrolled 1 new face(s) of 1 person(s)" in out


def test_a_large_enroll_summary_gives_counts_and_the_names_to_check(
    cli, images, tmp_path, monkeypatch
) -> None:
    """Above SUMMARY_NAMES people the summary named each (48,132 characters for 1,565),
    and every look-alike pair had its warning (57 for LFW). Now counts and only the new
    names close to enrolled ones; the closest LOOK_ALIKES_SHOWN pairs, then how many more."""
    monkeypatch.setattr(enroll_summary, "SUMMARY_NAMES", 2)
    monkeypatch.setattr(enroll_summary, "LOOK_ALIKES_SHOWN", 1)
    first = _people(images, tmp_path / "first", {"Ada Lovelace": 1})
    assert cli("enroll", "--dir", str(first))[0] == 0
    people = _people(images, tmp_path / "people", {"Ada-lovelace": 1, "Bob": 1, "Cy": 1}, 90)
    code, out, err = cli("enroll", "--dir", str(people))
    assert code == 0, err
    assert "enrolled 3 new face(s) of 3 person(s) into" in out
    assert ": 3 new, 0 enrolled before; new names close to enrolled ones (a typo?): " \
        "Ada-lovelace (like Ada Lovelace)" in out  # fmt: skip
    assert "Bob" not in out
    assert err.count("looks like") == 1  # the same photos under 4 names: 6 pairs
    assert "warning: and 5 more pair(s) of people as near (the closest 1 above); " \
        "`facewatch gallery calibrate --dry-run` lists the gallery's closest" in err  # fmt: skip


def test_a_persons_folder_from_a_phone_or_a_nas_takes_every_photo_and_says_what_it_left(
    cli, shared_data, tmp_path
) -> None:
    """.jfif photos and symlinked folders were left out unsaid; a folder of iPhone photos
    'held no images', and a HEIC photo was called corrupt; then one HEIC failed the folder."""
    person = messy_folder(shared_data / "images", tmp_path)
    code, out, err = cli("enroll", "--allow-mismatch", "--name", "Obama", str(person))
    assert code == 0, err
    assert "enrolled 3 new face(s) of 1 person(s)" in out, err  # a.jpg, album/x.jpg, download.jfif
    assert f"note: {person}: left out 1 file(s) that are not photos by their extension: notes.txt; left out 1 (IMG_0044.HEIC): HEIC/HEIF photos (an iPhone's default) are not read: convert them to JPEG" in err  # fmt: skip
    iphone = tmp_path / "iphone"
    iphone.mkdir()
    shutil.copy(person / "IMG_0044.HEIC", iphone / "IMG_0001.HEIC")
    code, _, err = cli("identify", str(iphone))
    assert code == 1 and f"error: {iphone}: folder holds no images or videos" in err
    assert f"note: {iphone}: left out 1 (IMG_0001.HEIC): HEIC/HEIF photos" in err


def test_a_folder_of_photos_and_the_heic_they_were_converted_from_enrolls_them(
    cli, images, tmp_path
) -> None:
    """IMG_1.JPG beside IMG_1.HEIC (what heif-convert leaves, and an iPhone export): each
    HEIC was rejected and nothing was enrolled (exit 1)."""
    person = tmp_path / "people" / "Obama"
    person.mkdir(parents=True)
    for k, name in enumerate(("obama", "obama2"), 1):
        shutil.copy(images[name], person / f"IMG_000{k}.JPG")
        (person / f"IMG_000{k}.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(500))
    code, out, err = cli("enroll", "--dir", str(person.parent))
    assert code == 0, err
    assert "enrolled 2 new face(s) of 1 person(s)" in out and "HEIC" not in err


def test_a_name_that_is_not_utf8_is_refused_before_any_work_naming_the_folder(
    cli, images, tmp_path
) -> None:
    """A Latin-1 folder name (an old Windows zip, an SMB share) crashed enroll with a
    UnicodeEncodeError after every photo was embedded, and left an empty gallery file."""
    people = tmp_path / "people"
    people.mkdir()
    folder = os.fsdecode(os.fsencode(people) + b"/Jos\xe9")  # 'José' in Latin-1
    os.mkdir(folder)
    shutil.copy(images["obama"], Path(folder) / "a.jpg")
    code, out, err = cli("enroll", "--dir", str(people))
    assert code == 2 and not out and not cli.gallery.exists()
    assert f"error: {people}/Jos\ufffd: name 'Jos\ufffd' is not valid UTF-8" in err
    assert f"rename the folder in UTF-8 (`convmv -f latin1 -t utf8 -r {people}`" in err
    code, _, err = cli("enroll", "--name", os.fsdecode(b"Jos\xe9"), str(images["obama"]))
    assert code == 2 and "--name: name 'Jos\ufffd' is not valid UTF-8" in err
    assert "type it in UTF-8" in err and not cli.gallery.exists()


def test_largest_says_which_face_it_took_from_a_group_photo(cli, images) -> None:
    """Enroll said nothing of the face it took, and two_people.jpg's two faces differ by
    0.1 px: '--name Biden' enrolled Obama."""
    code, out, err = cli("enroll", "--largest", "--name", "Biden", str(images["two"]))
    assert code == 0 and "Biden (new person)" in out
    note = re.search(rf"note: {re.escape(str(images['two']))}: 2 faces, took the largest \[(.*)\], 1 other\(s\) left out; the next is nearly as large \((\d+) px against (\d+)\): check", err)  # fmt: skip
    assert note is not None, err
    x1, y1, x2, y2 = map(float, note[1].split())
    assert min(x2 - x1, y2 - y1) == pytest.approx(float(note[3]), abs=1)
    code, _, err = cli("enroll", "--largest", "--name", "Obama", str(images["obama2"]))
    assert code == 0 and "note:" not in err  # one face: nothing to check


def test_identify_folders_json_errors_and_annotate_problems(cli, images, tmp_path) -> None:
    assert cli("enroll", "--name", "obama", str(images["obama"]))[0] == 0
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(images["biden"], folder / "b.jpg")
    shutil.copy(images["corrupt"], folder / "c.jpg")
    code, out, _ = cli("identify", "--json", str(folder))
    records = {Path(r["source"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 1 and len(records["b.jpg"]["faces"]) == 1
    assert "c.jpg" in records["c.jpg"]["error"]
    afile = tmp_path / "afile"
    afile.write_text("")
    code, _, err = cli("identify", "--annotate", str(afile), str(images["obama"]))
    assert code == 2 and f"--annotate {afile}" in err


def test_a_full_disk_under_stdout_is_blamed_on_stdout_not_the_photo(
    cli, images, monkeypatch
) -> None:
    """`identify --json photo.jpg > /dev/full` said "error: photo.jpg: [Errno 28] No space
    left on device" and counted the photo as failed; now the output is named, and the
    command stops there (exit status 1)."""
    import errno
    import io

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    assert cli("enroll", "--name", "obama", str(images["obama"]))[0] == 0
    for json_out in (["--json"], []):
        monkeypatch.setattr(sys, "stdout", Full())
        code, _, err = cli("identify", *json_out, str(images["obama"]), str(images["biden"]))
        assert code == 1
        assert err.strip() == "error: cannot write to stdout: No space left on device", err


def test_gallery_of_another_model_read_only_and_missing(cli, images, test_model, tmp_path) -> None:
    assert cli("enroll", "--name", "obama", str(images["obama"]))[0] == 0
    before = cli.gallery.read_bytes()
    code, _, err = cli("enroll", "--flip", "--name", "biden", str(images["biden"]))
    assert code == 1 and "this gallery was enrolled without --flip" in err
    assert "use it without --flip (recognition.flip: false" in err
    os.chmod(cli.gallery, 0o400)
    try:
        code, _, err = cli("enroll", "--name", "biden", str(images["biden"]))
        assert code == 1 and "read-only" in err
        assert cli("identify", str(images["obama"]))[0] == 0  # reading a read-only file is fine
    finally:
        os.chmod(cli.gallery, 0o600)
    assert cli.gallery.read_bytes() == before
    cli.gallery.unlink()
    code, _, err = cli("identify", str(images["obama"]))
    assert code == 1 and "no gallery here" in err


def test_a_missing_default_model_says_how_to_make_it(tmp_path, images, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FACEWATCH_MODELS", str(tmp_path))
    code = main(["enroll", "--name", "x", str(images["obama"]), "--gallery", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 2 and "the model facewatch ships is missing there" in err
    assert "train import-dlib" in err and "train export" in err
    assert main(["enroll", "--dir", str(tmp_path), "--name", "x"]) == 2


def _celeba_folder(shared_data: Path, dest: Path) -> Path:
    people = sorted(p for p in (shared_data / "celeba").iterdir() if p.is_dir())[:CELEBA_PEOPLE]
    for person in people:
        (dest / person.name).mkdir(parents=True)
        for image in sorted(person.glob("*.jpg"))[:CELEBA_IMAGES]:
            shutil.copy(image, dest / person.name / image.name)
    return dest


def test_calibrate_on_celeba_identities(cli, shared_data, tmp_path) -> None:
    folder = _celeba_folder(shared_data, tmp_path / "people")
    # the random model cannot tell one person's photos from another's: --allow-mismatch
    code, out, err = cli("enroll", "--dir", str(folder), "--largest", "--min-face-px", "20", "--skip-bad", "--allow-mismatch")  # fmt: skip
    assert code == 0, err
    # the random test model keeps a target FAR of 0.1 only by rejecting everyone (refused:
    # tests/unit/test_gallery.py); 0.5 it can, turning away over 30 % of the enrolled faces:
    # refused without --force, as a real model that cannot tell these people apart
    code, out, err = cli("gallery", "calibrate", "--target-far", "0.5", "--dry-run", model=False)
    assert code == 1 and "of the enrolled people's own faces (more than 30%)" in err, out + err
    assert json.loads(cli("gallery", "list", "--json", model=False)[1])["threshold"] == 1.1
    code, out, _ = cli("gallery", "calibrate", "--target-far", "0.5", "--force", model=False)
    assert code == 0 and f"calibrated on {CELEBA_PEOPLE} people" in out
    assert "expected FAR" in out and "FRR" in out
    threshold = float(out.split("threshold ")[1].split()[0])
    stored = json.loads(cli("gallery", "list", "--json", model=False)[1])["threshold"]
    assert stored == pytest.approx(threshold, abs=1e-4) and 0 < stored <= 4


def _held_out_people(shared_data: Path) -> list[Path]:
    """The identities training/held_out.sh keeps out of the shipped model's training data:
    the last HELD_OUT of the shared CelebA subset, by name."""
    people = sorted(p for p in (shared_data / "celeba").iterdir() if p.is_dir())
    return people[-HELD_OUT:]


def _best_face(record: dict) -> dict | None:
    faces = record["faces"]
    return max(faces, key=lambda f: f["bbox_xyxy"][2] - f["bbox_xyxy"][0]) if faces else None


@pytest.mark.first  # 46 s in CI
def test_celeba_rank1_and_unknown_rejection_with_the_shipped_model(
    shipped_model, shared_data, tmp_path, capsys
) -> None:
    """Enroll ENROLL_IMAGES photos of half the held-out CelebA people (never seen in training),
    identify their other photos (rank-1: the nearest enrolled person is theirs) and every photo
    of the other half, never enrolled (unknown rejection at the threshold a new gallery takes
    from the model's sidecar)."""
    people = _held_out_people(shared_data)
    known, strangers = people[: len(people) // 2], people[len(people) // 2 :]
    enroll_dir = tmp_path / "enroll"
    probes: list[tuple[Path, str | None]] = []
    for person in known:
        photos = sorted(person.glob("*.jpg"))
        (enroll_dir / person.name).mkdir(parents=True)
        for photo in photos[:ENROLL_IMAGES]:
            shutil.copy(photo, enroll_dir / person.name / photo.name)
        probes += [(photo, person.name) for photo in photos[ENROLL_IMAGES:]]
    for person in strangers:
        probes += [(photo, None) for photo in sorted(person.glob("*.jpg"))]
    gallery = ["--gallery", str(tmp_path / "g.sqlite"), "--threads", "2", "--no-progress"]
    assert main(["enroll", "--dir", str(enroll_dir), "--largest", "--skip-bad", *gallery]) == 0
    capsys.readouterr()
    assert main(["identify", "--json", *(str(p) for p, _ in probes), *gallery]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in records] == [str(p) for p, _ in probes]
    hits = named = known_total = rejected = strangers_total = 0
    for record, (_, truth) in zip(records, probes, strict=True):
        face = _best_face(record)
        if truth is None:
            strangers_total += 1
            rejected += face is None or face["identity"] is None
        else:
            known_total += 1
            hits += face is not None and face["nearest"] == truth
            named += face is not None and face["identity"] == truth
    rank1, rejection = hits / known_total, rejected / strangers_total
    print(
        f"rank-1 {rank1:.3f} of {known_total}, named {named / known_total:.3f}, "
        f"unknown rejection {rejection:.3f} of {strangers_total}"
    )
    if MEASURED_RANK1 is None or MEASURED_REJECTION is None or MEASURED_NAMED is None:
        pytest.fail("a FaceNet model ships: set the MEASURED_ figures to its own")
    assert rank1 >= MEASURED_RANK1 - MARGIN, f"rank-1 {rank1:.3f}"
    assert named / known_total >= MEASURED_NAMED - MARGIN, f"named {named / known_total:.3f}"
    assert rejection >= MEASURED_REJECTION - MARGIN, f"unknown rejection {rejection:.3f}"


def test_enroll_refuses_someone_elses_photo_and_warns_of_one_person_under_two_names(
    shipped_model, shared_data, tmp_path, capsys
) -> None:
    """Three photos of CelebA 7207 and one of 7210 as carol: the stray is refused, naming it
    and carol (it lies 0.22 from the others, which lie 0.08 apart; it was enrolled, and all of
    7210's other photos were named carol). 7204 as alice and again as bob: a warning, and
    identify shows the runner-up (it showed only the winner, 'bob (distance 0.103)')."""
    celeba = shared_data / "celeba"
    gallery = ["--gallery", str(tmp_path / "g.sqlite"), "--threads", "2", "--no-progress"]

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, *gallery])
        out, err = capsys.readouterr()
        return code, out, err

    carol = [str(p) for p in sorted((celeba / "7207").glob("*.jpg"))[:3]]
    stray = str(sorted((celeba / "7210").glob("*.jpg"))[0])
    code, out, err = run("enroll", "--name", "carol", "--largest", *carol, stray)
    assert code == 1 and not out
    assert f"rejected: {stray}: does not look like the other photos of carol (nearest 0.2" in err
    assert "threshold 0.154" in err and "--allow-mismatch" in err
    assert "1 of 4 image(s) rejected; nothing was enrolled" in err
    code, out, err = run("enroll", "--name", "carol", "--largest", "--skip-bad", *carol, stray)
    assert code == 0 and "enrolled 3 new face(s)" in out and "1 image(s) skipped" in out
    # against carol's enrolled faces too; --allow-mismatch takes it
    code, _, err = run("enroll", "--name", "carol", "--largest", stray)
    assert code == 1 and "does not look like the other photos of carol" in err
    code, out, _ = run("enroll", "--name", "carol", "--largest", "--allow-mismatch", stray)
    assert code == 0 and "enrolled 1 new face(s)" in out

    same = sorted((celeba / "7204").glob("*.jpg"))
    code, _, err = run("enroll", "--name", "alice", "--largest", *map(str, same[:3]))
    assert code == 0 and "looks like" not in err
    code, out, err = run("enroll", "--name", "bob", "--largest", *map(str, same[3:6]))
    assert code == 0 and "bob (new person)" in out
    assert "warning: bob looks like alice (0.0" in err and "the same person?" in err
    assert "as near as photos of one person" in err  # two photos, not one saved twice
    code, out, _ = run("identify", str(same[6]))
    assert code == 0 and "close behind at" in out
    winner, other = ("alice", "bob") if ": alice (distance" in out else ("bob", "alice")
    assert f"{other} close behind at" in out
    code, out, _ = run("identify", "--json", str(same[6]))
    face = json.loads(out)["faces"][0]
    assert face["identity"] == winner and face["runner_up"] == other
    assert 0 <= face["runner_up_distance"] - face["distance"] <= 0.02
    code, out, _ = run("identify", "--json", carol[0])  # nobody else near: no runner-up
    face = json.loads(out)["faces"][0]
    assert face["identity"] == "carol" and face["runner_up"] is None
    # carol's photo saved as PNG (other bytes) under another name: said to be one photo
    png = tmp_path / "carol.png"
    cv2.imwrite(str(png), cv2.imread(carol[0]))
    code, out, err = run("enroll", "--name", "dora", "--largest", str(png))
    assert code == 0 and "dora (new person)" in out
    assert "warning: dora looks like carol (0.00" in err
    assert "so near that it may be one photo saved twice (as PNG, or by a photo app)" in err


def test_a_profile_is_refused_like_the_other_gates_unless_allowed(cli, shared_data) -> None:
    """A face turned almost to profile (its nose 1.56 half eye distances off the eyes' middle)
    is refused, with the flag that takes it; enrolled, a full profile named strangers (it was
    taken without a word)."""
    profile = shared_data / "celeba" / "7249" / "116605.jpg"
    code, _, err = cli("enroll", "--name", "neymar", "--largest", str(profile))
    assert code == 1 and f"rejected: {profile}: face turned to the side (a profile" in err
    assert "the most is 1.5" in err and "--allow-profile" in err and not cli.gallery.exists()
    code, out, _ = cli("enroll", "--name", "neymar", "--largest", "--allow-profile", str(profile))
    assert code == 0 and "enrolled 1 new face(s)" in out


def test_a_new_gallery_starts_at_the_lfw_threshold_only_on_its_own_scale() -> None:
    """A sidecar's LFW threshold at FAR 1e-3 (else its best threshold) seeds a new gallery,
    only when it was measured as the gallery measures (squared L2 of single embeddings), not as
    an angle or on flipped pairs."""
    from types import SimpleNamespace

    from daemon.enroll_summary import new_gallery_threshold

    def net(**lfw: object) -> object:
        return SimpleNamespace(meta=SimpleNamespace(extra={"lfw": {"best_threshold": 0.9, **lfw}}))

    assert new_gallery_threshold(net()) == {"threshold": 0.9}  # type: ignore[arg-type]
    assert new_gallery_threshold(net(far_threshold=0.7)) == {"threshold": 0.7}  # type: ignore[arg-type]
    assert new_gallery_threshold(net(distance_metric=1)) == {}  # type: ignore[arg-type]
    assert new_gallery_threshold(net(use_flipped_images=True)) == {}  # type: ignore[arg-type]


def test_flip_help_says_the_starting_threshold_was_measured_without_it(capsys) -> None:
    """A --flip gallery's faces lie nearer each other: at the same starting threshold it
    named 41.6 % of strangers where one without flip named 33.7 % (70 people x 5 photos).
    The help of --flip, and of recognition.flip, say so and point to calibrate."""
    from daemon.config_listing import schema_lines

    for command in ("enroll", "identify"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        said = " ".join(capsys.readouterr().out.split())
        flip = said.rsplit("--flip", 1)[1]
        assert "the model's measured without flip, names more strangers" in flip, flip
        assert "run `facewatch gallery calibrate` on a flip gallery" in flip
    schema = " ".join(" ".join(schema_lines()).split())
    assert "the model's threshold was measured without: `facewatch gallery calibrate`" in schema


def test_the_shipped_model_card_says_where_a_gallery_starts_and_that_it_is_per_comparison() -> None:
    """The card said "same person below the threshold (LFW best threshold: 0.19)", which a
    new gallery does not use; it names the threshold a gallery starts at, says that rate is
    per comparison, and is what the exporters write from the sidecar."""
    from engines.base import ModelMetadata
    from training.model_card import model_card

    shipped = REPO / "models" / "facenet" / "facenet.onnx"
    card = shipped.with_suffix(".md").read_text()
    assert card == model_card(ModelMetadata.load(shipped), shipped)
    said = " ".join(card.split())
    assert "A new gallery starts at 0.154, LFW's threshold for a false accept rate of 0.001" in said
    assert "a rate per comparison: a gallery compares a stranger with every enrolled face" in said
    assert "LFW best threshold" not in said
    # what bench/bench_fairness.py measured, kept in the sidecar so a rewritten card keeps it
    groups = said.split("## Differences between groups of people", 1)[1]
    assert "false match rate at 0.154" in groups, groups
    assert "What was not measured: false non-matches" in groups
    assert "`facewatch gallery calibrate`" in groups


def test_a_model_with_lfw_figures_enrolls_into_its_gallery_again(
    test_model, images, tmp_path, capsys
) -> None:
    """A model exported with an LFW report (or validated with --record): its threshold for
    a false accept rate of 1e-3 (else its best one) starts a new gallery, which enroll says,
    and the next enrollment adds to that gallery."""
    model = tmp_path / "model" / "facenet.onnx"
    model.parent.mkdir()
    shutil.copy(test_model, model)
    sidecar = json.loads(test_model.with_suffix(".json").read_text())
    sidecar["extra"]["lfw"] = {"best_threshold": 1.1, "far_threshold": 0.95, "accuracy": 0.9}
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    gallery = tmp_path / "gallery.sqlite"
    common = ["--model", str(model), "--gallery", str(gallery), "--threads", "2", "--no-progress"]
    assert main(["enroll", "--name", "obama", str(images["obama"]), *common]) == 0
    said = capsys.readouterr()
    assert "a new gallery: match threshold 0.950 (the model's" in said.out
    assert "warning" not in said.err
    assert main(["enroll", "--name", "biden", str(images["biden"]), *common]) == 0
    assert "a new gallery" not in capsys.readouterr().out
    assert main(["gallery", "list", "--gallery", str(gallery)]) == 0
    listing = capsys.readouterr().out
    assert "obama" in listing and "biden" in listing and "threshold 0.950" in listing, listing
    # without LFW figures: facewatch's 1.1, said to be no threshold of this model's
    del sidecar["extra"]["lfw"]
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    other = [*common[:2], "--gallery", str(tmp_path / "unmeasured.sqlite"), *common[4:]]
    assert main(["enroll", "--name", "obama", str(images["obama"]), *other]) == 0
    said = capsys.readouterr()
    assert (
        "a new gallery: match threshold 1.100 (facewatch's default, the model has none" in said.out
    )
    assert "warning: the model (" in said.err
    assert "has no LFW figures, so " in said.err and "unmeasured.sqlite starts at 1.100, the "\
        "usual threshold of facenet-pytorch's published weights, not one measured for this " \
        "model" in said.err  # fmt: skip
    assert "`facewatch gallery calibrate`" in said.err and "gallery threshold --default" in said.err


def _archived_visit(tmp_path: Path, photo: Path, face_xyxy: np.ndarray) -> Path:
    """A face archive visit folder holding ``photo`` as its one image, the face at
    ``face_xyxy``, as the daemon writes it."""
    visit = tmp_path / "archive" / "2026-11-29" / "door" / "101500-t1-unknown"
    visit.mkdir(parents=True)
    shutil.copy(photo, visit / "face-1.jpg")
    about = {"first_seen_ts": time.time(), "images": [
        {"file": "face-1.jpg", "face_xyxy": face_xyxy.tolist()}]}  # fmt: skip
    (visit / "visit.json").write_text(json.dumps(about))
    return visit


@pytest.mark.parametrize(
    "face_xyxy",
    [b"[1" + b"0" * 400 + b", 1, 2, 3]", b"[NaN, 1, 2, 3]", b'["1", 1, 2, 3]', b"[" * 100000 + b"]" * 100000],
)  # fmt: skip
def test_a_damaged_visit_json_is_said_once_and_its_photo_taken_as_any(
    tmp_path, capsys, face_xyxy
) -> None:
    """A face box of 400 digits was an OverflowError traceback of `enroll`, a NaN box was
    taken as the face's place. Now the visit.json is unreadable: said, and the photo's
    face is found as in any photo."""
    from daemon.enroll_checks import archived_face

    visit = tmp_path / "2026-11-29" / "door" / "101500-t1-unknown"
    visit.mkdir(parents=True)
    image = b'{"file": "face-1.jpg", "face_xyxy": ' + face_xyxy + b"}"
    (visit / "visit.json").write_bytes(b'{"first_seen_ts": 1.5, "images": [' + image + b"]}")
    assert archived_face(visit / "face-1.jpg") is None
    assert f"warning: {visit / 'visit.json'} cannot be read" in capsys.readouterr().err


def test_a_face_archive_visit_enrolls_its_own_face_not_the_neighbours(
    cli, images, detector, tmp_path
) -> None:
    """A visit's images show its face with context, where a larger face of someone nearer
    the camera may show too: enroll takes the face its visit.json places, with no
    --largest; `enroll --dir` on the archive itself is refused (it would enroll days or
    visits as people)."""
    frame = cv2.imread(str(images["two"]))
    found = detector.detect([frame])[0]
    small = int(np.argmin(found.bbox_xyxy[:, 2] - found.bbox_xyxy[:, 0]))
    visit = _archived_visit(tmp_path, images["two"], found.bbox_xyxy[small])

    code, out, err = cli("enroll", "--name", "Small", str(visit))
    assert code == 0, err
    assert "note:" not in err  # neither its visit.json left out nor the other face
    code, out, _ = cli("identify", "--json", str(images["two"]))
    faces = json.loads(out)["faces"]
    nearest = min(faces, key=lambda f: f["distance"])
    assert nearest["bbox_xyxy"] == pytest.approx(found.bbox_xyxy[small].tolist(), abs=0.01)

    for folder in (tmp_path / "archive", visit.parent.parent, visit.parent, visit):
        code, _, err = cli("enroll", "--dir", str(folder))
        assert code == 2 and "folder of the face archive" in err, folder
    for folder in (tmp_path / "archive", visit.parent.parent, visit.parent):  # many visits
        code, _, err = cli("enroll", "--name", "Bob", str(folder))
        assert code == 2 and "folder of the face archive" in err, folder


def test_a_visit_whose_visit_json_cannot_be_read_is_said_not_silently_guessed(
    cli, images, detector, tmp_path
) -> None:
    """A visit.json cut short (a power cut): enroll took some face of the picture with no
    word. It says so, and goes on as for any photo (one face, else refused)."""
    frame = cv2.imread(str(images["two"]))
    found = detector.detect([frame])[0]
    visit = _archived_visit(tmp_path, images["two"], found.bbox_xyxy[0])
    (visit / "visit.json").write_text('{"images": [{"file": "fa')
    code, _, err = cli("enroll", "--name", "Small", str(visit))
    assert f"warning: {visit / 'visit.json'} cannot be read (JSONDecodeError" in err, err
    assert code != 0 and "faces found, expected exactly one" in err, err


def test_an_archived_face_just_under_the_detectors_thresholds_is_found_again(
    test_model, detector, images, tmp_path
) -> None:
    """The daemon found the face in the whole frame; in the JPEG the archive kept, its
    candidate can fall just under the first stages' thresholds. Where its visit.json places
    it, enroll looks again less strictly; a plain photo keeps the detector's own thresholds.
    The face's own score must still reach what the daemon needs to see a face: the back of
    a head the daemon saw at 0.701 (O-Net's threshold 0.7) scored 0.651 in its JPEG and was
    enrolled, and named strangers."""
    from daemon.cli_models import Models
    from daemon.enroll_checks import ARCHIVE_THRESHOLDS, enroll_crop
    from daemon.face_quality import QualityGates, Rejected
    from engines.detectors import load_facenet

    frame = cv2.imread(str(images["obama"]))
    found = detector.detect([frame])[0]
    main_face = int(np.argmax(found.score))
    facenet = load_facenet(test_model)
    strict = next(  # an R-Net threshold that loses the face
        Models(detector.with_config(thresholds=(0.6, r_net, 0.7)), facenet)
        for r_net in (0.9999, 0.99999, 0.999999)
        if not len(detector.with_config(thresholds=(0.6, r_net, 0.7)).detect([frame])[0])
    )
    with pytest.raises(Rejected, match="no face found"):
        enroll_crop(strict, QualityGates(), images["obama"])
    visit = _archived_visit(tmp_path, images["obama"], found.bbox_xyxy[main_face])
    crop = enroll_crop(strict, QualityGates(), visit / "face-1.jpg")
    again = detector.with_config(thresholds=ARCHIVE_THRESHOLDS).detect([frame])[0]
    assert np.array_equal(crop, strict.facenet.align(frame, again, [0])[0])  # that face
    # found at the detector's own thresholds, it keeps their box: the crop of a plain photo
    normal = Models(detector, strict.facenet)
    crop = enroll_crop(normal, QualityGates(), visit / "face-1.jpg")
    assert np.array_equal(crop, normal.facenet.align(frame, found, [main_face])[0])
    # a daemon whose O-Net needs more than this face scores would not see it: refused
    above = (float(found.score[main_face]) + 1.0) / 2
    assert found.score[main_face] < above < 1.0
    with pytest.raises(Rejected, match=f"the detector scores this face .*, under the {above:g}"):
        enroll_crop(normal, QualityGates(min_score=above), visit / "face-1.jpg")


def test_enroll_refuses_an_archived_face_turned_away_from_the_camera(
    cli, images, detector, test_model, tmp_path
) -> None:
    """A visit's image whose face the camera's detector scored low when it was seen (the
    top of a head looking down at 0.83, the back of one at 0.701) was enrolled as any other
    and then named strangers. enroll refuses it, saying why; --allow-profile takes it. The
    back of a head the daemon's detector would not see at all in the JPEG (re-detected under
    the O-Net threshold, as --config's detection.thresholds set it) is refused even so."""
    frame = cv2.imread(str(images["obama"]))
    found = detector.detect([frame])[0]
    visit = _archived_visit(tmp_path, images["obama"], found.bbox_xyxy[0])
    about = json.loads((visit / "visit.json").read_text())
    about["images"][0]["score"] = 0.83
    (visit / "visit.json").write_text(json.dumps(about))

    code, _, err = cli("enroll", "--name", "Turned", str(visit))
    assert code == 1, err
    assert "the camera's detector scored this face 0.83 when it was seen" in err, err
    assert "--allow-profile takes it" in err
    code, _, err = cli("enroll", "--name", "Turned", "--allow-profile", str(visit))
    assert code == 0, err
    assert cli("gallery", "remove", "Turned", model=False)[0] == 0  # (else enrolled already)

    config = tmp_path / "facewatch.yaml"
    loose = detector.with_config(thresholds=(0.5, 0.5, 0.5)).detect([frame])[0]  # (enroll's
    seen = max(float(found.score[0]), float(loose.score.max()))  # second look, loosened)
    above = (seen + 1.0) / 2  # a daemon's O-Net that would not see it
    settings = {
        "cameras": [{"name": "door", "url": "x.mp4"}],
        "recognition": {"model": str(test_model)},
        "detection": {"thresholds": [0.6, 0.7, above]},
    }
    config.write_text(json.dumps(settings))
    code, _, err = cli(
        "enroll", "--name", "Turned", "--allow-profile", "--config", str(config), str(visit),
        "--no-progress", model=False,
    )  # fmt: skip
    assert code == 1, err
    assert "the detector scores this face" in err and f"under the {above:g}" in err


def test_the_archives_enrollable_flag_is_what_enroll_decides(test_model, detector) -> None:
    """The archive marks the images enroll would take (and ranks the others low): the same
    size, edge, pose, score and blur gates, the blur on the crop enroll checks."""
    from daemon.face_quality import QualityGates, Rejected, rate_face
    from engines.detectors import load_facenet

    facenet = load_facenet(test_model, threads=2)
    gates = QualityGates(largest=True)
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    decisions = []
    for k in range(0, 270, 9):
        clip.set(cv2.CAP_PROP_POS_FRAMES, k)
        ok, frame = clip.read()
        assert ok
        found = detector.detect([frame])[0]
        for i in range(len(found)):
            try:
                gates.choose_face(found, frame.shape[:2], found.bbox_xyxy[i])
                gates.check_seen_score(float(found.score[i]))
                gates.check_sharpness(facenet.align(frame, found, [i])[0])
                enroll_takes = True
            except Rejected:
                enroll_takes = False
            face = (frame, found.bbox_xyxy[i], found.landmarks[i], float(found.score[i]))
            flag = rate_face(*face, facenet.align_face).enrollable
            decisions.append((flag, enroll_takes))
    assert {True, False} <= {takes for _, takes in decisions}, "both kinds of faces"
    assert all(flag == takes for flag, takes in decisions)


def test_the_archives_enrollable_count_is_what_enroll_takes_from_its_images(
    shared_data, shipped_model, detector, tmp_path, capsys
) -> None:
    """The archive rated blur on the camera's frame, enroll on the JPEG the archive wrote:
    on a 1080p crowd, 71 of the 115 images `archive list` counted as enrollable were refused
    as too blurry. Rated on the JPEG as enroll reads it, the count and the images agree
    (but for the few where enroll, finding the face again, places its landmarks apart)."""
    from daemon.archive import FaceArchive
    from daemon.config_outputs import ArchiveConfig
    from daemon.face_quality import QualityGates, Rejected
    from daemon.tracks import Track, TrackEvent
    from engines.detectors import load_facenet

    facenet = load_facenet(shipped_model, threads=2)
    archive = FaceArchive(
        ArchiveConfig(dir=str(tmp_path / "archive")), "n", "m", facenet.align_face
    )
    archive.start()
    clip, tracks = cv2.VideoCapture(str(shared_data / "videos" / "crowd_1080p.mp4")), []
    for k in range(0, 105, 5):
        clip.set(cv2.CAP_PROP_POS_FRAMES, k)
        ok, frame = clip.read()
        assert ok
        found = detector.detect([frame])[0]
        for i in range(len(found)):  # each face a visit of its own, of one image
            track = Track(len(tracks) + 1, found.bbox_xyxy[i], found.landmarks[i], 1e9, 1e9)
            face = (found.bbox_xyxy[i], found.landmarks[i], float(found.score[i]))
            archive.observe("door", track, frame, face, 1e9)
            tracks.append(track)
    left = [TrackEvent("left", t, None, 1.0, None, reason="lost") for t in tracks]
    archive.visits_ended("door", left, live=set())
    archive.stop(timeout_s=30)

    assert main(["archive", "list", "--dir", str(tmp_path / "archive")]) == 0
    out = capsys.readouterr().out
    listed = sum(int(n) for n in re.findall(r"image\(s\), (\d+) enrollable", out))
    models, agree, takes = Models(detector, facenet), 0, 0
    images = sorted((tmp_path / "archive").glob("*/*/*/face-1.jpg"))
    for path in images:
        flag = json.loads((path.parent / "visit.json").read_text())["images"][0]["enrollable"]
        try:
            enroll_checks.enroll_crop(models, QualityGates(), path)
            taken = True
        except Rejected:
            taken = False
        agree, takes = agree + (flag == taken), takes + taken
    assert len(images) == len(tracks) > 100 and takes >= 5, "faces of both kinds"
    assert abs(listed - takes) <= max(2, takes // 4), (listed, takes)
    assert agree >= 0.95 * len(images), (agree, len(images))


def test_the_daemons_config_gives_the_model_gallery_and_flip(
    test_model, images, tmp_path, capsys
) -> None:
    """`--config FILE`: the commands use the daemon's recognition.model, .gallery (relative
    to the file) and .flip, so the gallery matches what the daemon reads."""
    config = tmp_path / "etc" / "facewatch.yaml"
    config.parent.mkdir()
    camera = {"name": "door", "url": "x.mp4"}
    recognition = {"model": str(test_model), "gallery": "people.sqlite", "flip": True}
    config.write_text(json.dumps({"cameras": [camera], "recognition": recognition}))
    common = ["--config", str(config), "--threads", "2", "--no-progress"]
    assert main(["enroll", "--name", "obama", str(images["obama"]), *common]) == 0
    assert (tmp_path / "etc" / "people.sqlite").is_file()
    capsys.readouterr()
    assert main(["gallery", "list", "--json", "--config", str(config)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["model_id"].endswith("+flip") and listed["identities"][0]["name"] == "obama"
    assert main(["identify", "--json", str(images["obama2"]), *common]) == 0
    assert json.loads(capsys.readouterr().out)["faces"][0]["nearest"] == "obama"
    recognition["threshold"] = 1e-9  # the daemon's override: identify matches as it does
    config.write_text(json.dumps({"cameras": [camera], "recognition": recognition}))
    assert main(["identify", "--json", str(images["obama2"]), *common]) == 0
    [face] = json.loads(capsys.readouterr().out)["faces"]
    assert face["nearest"] == "obama" and face["identity"] is None
    recognition["flip"] = False
    config.write_text(json.dumps({"cameras": [camera], "recognition": recognition}))
    for extra in (["--flip"], ["--model", str(test_model)]):  # what the daemon would refuse
        assert main(["enroll", "--name", "x", str(images["obama"]), *common, *extra]) == 2
        assert "would make a gallery it refuses" in capsys.readouterr().err

    config.write_text(json.dumps({"cameras": [camera], "recognition": {"model": None}}))
    assert main(["enroll", "--name", "x", str(images["obama"]), *common]) == 2
    assert "recognition.model is null" in capsys.readouterr().err
    config.write_text("cameras: [{name: door}]")
    assert main(["gallery", "list", "--config", str(config)]) == 2
    assert "cameras[0] (door).url: required key is missing" in capsys.readouterr().err


def test_the_daemons_config_gives_the_engines_and_backend_runs_both_models(
    test_model, images, tmp_path, capsys, caplog
) -> None:
    """`identify --config` ran MTCNN on OpenVINO and FaceNet at its own --backend and
    --precision whatever the config said (engines.backend: tensorrt on a GPU box: the CPU, not
    the daemon's plans). With --config it runs the daemon's engines and says which (INFO); a
    --backend or --precision asking for others is refused, as --model is. Without --config,
    --backend is the daemon's engines.backend: MTCNN's too (it was FaceNet's only)."""
    from daemon.cli_models import load_models
    from engines.opencv_dnn import OpenCVEngine

    config = tmp_path / "facewatch.yaml"
    recognition = {"model": str(test_model), "gallery": "g.sqlite", "precision": "fp32"}
    settings = {
        "cameras": [{"name": "door", "url": "x.mp4"}],
        "recognition": recognition,
        "engines": {"backend": "opencv"},
    }
    config.write_text(json.dumps(settings))
    common = ["--config", str(config), "--threads", "2", "--no-progress"]
    photo = str(images["obama"])
    with caplog.at_level("INFO", logger="daemon.identify_cli"):
        assert main(["enroll", "--name", "obama", photo, *common]) == 0
        assert main(["identify", photo, *common, "--backend", "opencv"]) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "daemon.identify_cli"]
    runs = f"detector MTCNN on opencv, FaceNet {_model_id(test_model)} fp32 on onnxruntime"
    assert said == [runs, runs]
    capsys.readouterr()
    for extra in (["--backend", "openvino"], ["--precision", "bf16"]):
        assert main(["identify", photo, *common, *extra]) == 2
        err = capsys.readouterr().err
        assert f"gives the engines the daemon runs: {' '.join(extra)} would run others" in err

    options = {"model": None, "flip": False, "backend": None, "precision": None, "threads": 2}
    models = load_models(SimpleNamespace(config=str(config), **options))
    assert isinstance(models.detector.pnet, OpenCVEngine)
    assert models.facenet.runs_as == "fp32 on onnxruntime"
    options.update(model=test_model, backend="opencv", precision="fp32")
    models = load_models(SimpleNamespace(config=None, **options))
    assert isinstance(models.detector.pnet, OpenCVEngine)
    assert models.facenet.runs_as == "fp32 on onnxruntime"


def _model_id(model: Path) -> str:
    from engines.facenet import FaceNet

    return FaceNet.load(model, threads=1).model_id


class _StandIn:
    """A FaceNet stand-in for enroll's last step: the crops given are the embeddings."""

    model_id = "stand-in@sha256:0"
    embedding_size = 4
    meta = SimpleNamespace(extra={})

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return crops


def _store(gallery: Path, who: list[tuple[str, np.ndarray, str]]) -> int:
    """enroll's writing of one batch into the gallery: (name, embedding, photo hash); the
    exit status, 1 with the gallery's refusal said."""
    writer = enroll_run.Writer(gallery, cast(Any, _StandIn()))
    try:
        writer.store([Enrollment(name, vector, sha) for name, vector, sha in who])
    except GalleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        writer.close()
    print(f"new gallery: {writer.new}")
    return 0


E0, E1 = np.eye(4, dtype=np.float32)[:2]


def test_an_enroll_that_fails_deletes_only_a_gallery_it_made_and_nobody_wrote(
    tmp_path, capsys, monkeypatch
) -> None:
    """Two first enrolls at the same moment: the one that lost the race to create the
    gallery deleted the other's gallery on its way out. A failed enroll now removes only
    the empty gallery it made itself, and not once another enroll has written to it."""
    path = tmp_path / "gallery.sqlite"
    assert _store(path, [("ada", 3 * E0, "a1")]) == 1  # not unit length: refused
    assert "nothing was enrolled" in capsys.readouterr().err
    assert not path.exists()  # its own empty gallery went with it

    real_place = gallery_module.place

    def another_enroll_first(scratch: Path, target: Path) -> None:
        monkeypatch.setattr(gallery_module, "place", real_place)
        with Gallery.create(tmp_path / "theirs.sqlite", _StandIn.model_id, 4) as theirs:
            theirs.enroll([Enrollment("ada", E0, "photo")])
        os.rename(tmp_path / "theirs.sqlite", target)
        real_place(scratch, target)  # FileExistsError: theirs is there now

    monkeypatch.setattr(gallery_module, "place", another_enroll_first)
    assert _store(path, [("bob", E1, "photo")]) == 1  # ada's photo: refused
    assert "a photo of 'bob' is already enrolled as 'ada'" in capsys.readouterr().err
    with Gallery.open(path) as kept:
        assert [i.name for i in kept.identities()] == ["ada"]

    path.unlink()
    real_open_or_create = Gallery.open_or_create

    def another_enroll_between(*args: Any, **kwargs: Any) -> Gallery:
        made = real_open_or_create(*args, **kwargs)  # made here, then the other writes
        with Gallery.open(path, writable=True) as theirs:
            theirs.enroll([Enrollment("ada", E0, "photo")])
        return made

    monkeypatch.setattr(Gallery, "open_or_create", another_enroll_between)
    assert _store(path, [("bob", E1, "photo")]) == 1
    with Gallery.open(path) as kept:
        assert [i.name for i in kept.identities()] == ["ada"]
    monkeypatch.setattr(Gallery, "open_or_create", real_open_or_create)
    assert _store(path, [("bob", E1, "b1")]) == 0
    assert "new gallery: False" in capsys.readouterr().out  # not said to be new
    with Gallery.open(path) as kept:
        assert [i.name for i in kept.identities()] == ["ada", "bob"]


def test_an_enroll_stopped_by_an_unforeseen_error_leaves_no_empty_gallery(
    tmp_path, monkeypatch
) -> None:
    """Only a GalleryError removed the gallery the enroll had just made."""
    path = tmp_path / "gallery.sqlite"

    def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(Gallery, "enroll", broken)
    with pytest.raises(RuntimeError):
        _store(path, [("ada", E0, "a1")])
    assert not path.exists()


def test_a_command_started_with_stdout_closed_runs_as_before(cli, images, monkeypatch) -> None:
    """`facewatch gallery list >&-` (Python's sys.stdout is then None): the stdout guard of
    a full disk wrapped None, and the command failed with an AttributeError traceback."""

    assert cli("enroll", "--name", "obama", str(images["obama"]))[0] == 0
    monkeypatch.setattr(sys, "stdout", None)
    code, _, err = cli("gallery", "list", model=False)
    assert code == 0 and "Traceback" not in err and "AttributeError" not in err, err


# visits of the demo clip's frames: Lin-Manuel Miranda's (the largest face) and a man of the
# audience's (the face whose box starts nearest x 380), 0.28 to 0.33 from Lin's faces
CLIP_VISITS = {
    "lin": (84, 96, 108, 120, 132),
    "lin later": (150, 162, 174, 186, 198),
    "stranger": (216, 228, 240, 252, 264),
    "lin then stranger": (90, 102, 114, 222, 234),
}
STRANGER_X, STRANGER_FROM = 380, 216


@pytest.fixture(scope="module")
def clip_visits(detector, tmp_path_factory) -> dict[str, Path]:
    """Face archive visits of camera 'hamilton', written by the archive itself from the demo
    clip's frames: Lin twice, the man once, and one track that passed from Lin (3 images) to
    him (2), as a track does when one person takes another's place."""
    from daemon.archive import FaceArchive
    from daemon.config_outputs import ArchiveConfig
    from daemon.tracks import Track, TrackEvent

    root = tmp_path_factory.mktemp("clip-archive") / "archive"
    archive = FaceArchive(ArchiveConfig(dir=str(root), which="all"), "node", "m-1")
    archive.start()
    clip = cv2.VideoCapture(str(REPO / "configs" / "demo" / "hamilton_360p.mp4"))
    faces = {}
    for k in sorted({k for frames in CLIP_VISITS.values() for k in frames}):
        clip.set(cv2.CAP_PROP_POS_FRAMES, k)
        frame = clip.read()[1]
        found = detector.detect([frame])[0]
        if k >= STRANGER_FROM:
            i = int(np.argmin(abs(found.bbox_xyxy[:, 0] - STRANGER_X)))
        else:
            i = int(np.argmax(found.bbox_xyxy[:, 2] - found.bbox_xyxy[:, 0]))
        faces[k] = (frame, found.bbox_xyxy[i], found.landmarks[i], float(found.score[i]))
    clip.release()
    start = time.time() - 3600
    for track_id, frames in enumerate(CLIP_VISITS.values(), 1):
        first = start + 60 * track_id
        track = Track(track_id, faces[frames[0]][1], faces[frames[0]][2], first, first)
        for n, k in enumerate(frames):  # a second apart: each its own image of the visit
            frame, box, landmarks, score = faces[k]
            track.bbox_xyxy, track.landmarks, track.last_seen = box, landmarks, first + n
            archive.observe("hamilton", track, frame, (box, landmarks, score), first + n)
        left = TrackEvent("left", track, None, 1.0, None, reason="lost")
        archive.visits_ended("hamilton", [left], live=set())
    archive.stop(timeout_s=30)
    folders = sorted(p.parent for p in root.glob("*/*/*/visit.json"))
    assert len(folders) == len(CLIP_VISITS)
    return dict(zip(CLIP_VISITS, folders, strict=True))


def test_a_wrong_visit_or_a_visit_of_two_people_is_refused_not_enrolled_silently(
    shipped_model, clip_visits, tmp_path, capsys
) -> None:
    """A stranger's visit enrolled as Lin by mistake, and a visit whose track passed from Lin
    to the stranger: both were enrolled without a word (each image had its own visit's
    images near it, as every track's have). Now a visit is judged against the person's
    enrolled faces and other visits, not its own images, and a visit whose images fall into
    two people is refused, naming which go together; Lin's second visit is taken as before.
    (The audience's faces are blurred: --min-sharpness 0 takes them.)"""
    gallery = ["--gallery", str(tmp_path / "g.sqlite"), "--threads", "2", "--no-progress"]

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["enroll", "--min-sharpness", "0", *args, *gallery])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("--name", "Lin", str(clip_visits["lin"]))
    assert code == 0 and "enrolled 5 new face(s)" in out and "Lin (new person)" in out, err
    stranger = clip_visits["stranger"]
    code, out, err = run("--name", "Lin", str(stranger))
    assert code == 1 and not out, err
    for k in range(1, 6):
        image = stranger / f"face-{k}.jpg"
        assert f"rejected: {image}: does not look like the other photos of Lin" in err
    assert "the other images of its visit not counted" in err and "--allow-mismatch" in err
    # no other image to enroll: another visit, not --skip-bad
    assert "5 of 5 image(s) rejected; nothing was enrolled" in err
    assert "--skip-bad" not in err and "take another visit of Lin" in err
    assert "`facewatch archive list --unknown` lists the visits" in err
    code, out, err = run("--name", "Lin", str(clip_visits["lin later"]))
    assert code == 0 and "enrolled 5 new face(s) of 1 person(s)" in out, err

    mixed = clip_visits["lin then stranger"]
    for name in ("Mixed", "Lin"):  # a new person, and one enrolled
        code, out, err = run("--name", name, "--skip-bad", str(mixed))
        assert code == 1 and not out, err
        assert f"rejected: {mixed}: this visit seems to show 2 people: face-1.jpg, " \
            "face-2.jpg, face-3.jpg vs face-4.jpg, face-5.jpg" in err, err  # fmt: skip
        assert f"`enroll --name {name} {mixed / 'face-1.jpg'} ...`" in err
    code, out, err = run("--name", "Lin", *(str(mixed / f"face-{k}.jpg") for k in (1, 2, 3)))
    assert code == 0 and "enrolled 3 new face(s)" in out, err
    code, out, _ = run("--name", "Lin", "--allow-mismatch", str(mixed))  # as asked: all
    assert code == 0 and "enrolled 2 new face(s)" in out and "3 not added" in out


def test_enrolled_into_the_daemons_gallery_says_when_it_names_them_and_how_to_check(
    shipped_model, clip_visits, tmp_path, capsys
) -> None:
    """Enrolled with the daemon's --config: that a daemon running with it takes the change
    within 2 s, without a restart (it looks at the file every 2 s), and the identify line
    that checks the visit's camera names them (it said only what it enrolled). Into another
    gallery than the config's: not a word of the daemon."""
    config = tmp_path / "facewatch.yaml"
    gallery = tmp_path / "gallery.sqlite"
    config.write_text(json.dumps({"cameras": [{"name": "hamilton", "url": "stage.mp4"}],
                                  "recognition": {"gallery": str(gallery),
                                                  "model": str(shipped_model)}}))  # fmt: skip
    common = ["--name", "Lin", "--threads", "2", "--no-progress"]
    assert main(["enroll", "--config", str(config), *common, str(clip_visits["lin"])]) == 0
    out = capsys.readouterr().out
    assert f"a daemon running with {config} picks this up within 2 s (it looks at {gallery} " \
        "every 2 s; no restart needed)" in out  # fmt: skip
    assert f"`facewatch identify --config {config} --camera hamilton PHOTO`" in out
    other = ["--gallery", str(tmp_path / "other.sqlite"), str(clip_visits["lin later"])]
    assert main(["enroll", "--config", str(config), *common, *other]) == 0
    assert "picks this up" not in capsys.readouterr().out
