"""The `facewatch train` commands as a user meets them: their output, help and errors."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.face_folders import celeba_people, lfw_pairs, needs_celeba, tiny_checkpoint
from training.cli_facenet import main as cli

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED / "images").is_dir(), reason=f"shared data not found at {SHARED}"
)


@needs_shared
def test_align_says_its_summary_once(tmp_path: Path, capsys, caplog) -> None:
    raw = tmp_path / "raw" / "obama"
    raw.mkdir(parents=True)
    (raw / "a.jpg").symlink_to(SHARED / "images" / "obama.jpg")
    argv = ["align", str(tmp_path / "raw"), str(tmp_path / "out"), "--image-size", "96"]
    with caplog.at_level(logging.INFO):
        assert cli([*argv, "--margin", "16", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    said = out.splitlines() + logged
    assert sum("images: 1, aligned now: 1" in line for line in said) == 1, said


class _Found:
    """Detections of one image, as engines.mtcnn gives them."""

    def __init__(self, boxes: list[list[float]]):
        self.bbox_xyxy = np.array(boxes, np.float32).reshape(-1, 4)
        self.landmarks = np.zeros((len(boxes), 5, 2), np.float32)

    def __len__(self) -> int:
        return len(self.bbox_xyxy)


class _FakeMtcnn:
    """Two faces in an image with any detail, none in a flat one."""

    def detect(self, images: list[np.ndarray]) -> list[_Found]:
        flat = [image.std() == 0 for image in images]
        return [_Found([] if f else [[10, 10, 50, 50], [60, 10, 90, 40]]) for f in flat]


def _raw_folder(root: Path) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for name, image in [
        ("ann/a.png", rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)),
        ("blank/b.png", np.full((100, 100, 3), 128, np.uint8)),
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), image)
    return root


@pytest.mark.parametrize(
    ("given", "multiple"),
    [
        (["--detect_multiple_faces", "True"], True),  # the original's form (type=bool)
        (["--detect_multiple_faces", "1"], True),
        (["--detect_multiple_faces", "False"], False),
        (["--detect-multiple-faces"], True),
        (["--detect_multiple_faces"], True),  # at the end: the flag
        ([], False),
    ],
)
def test_align_takes_the_originals_detect_multiple_faces_value(
    tmp_path: Path, monkeypatch, capsys, given: list[str], multiple: bool
) -> None:
    """ "--detect_multiple_faces True" was refused ("unrecognized arguments: True")."""
    from engines.mtcnn import MTCNN

    monkeypatch.setattr(MTCNN, "load", staticmethod(lambda *a, **k: _FakeMtcnn()))
    raw, out = _raw_folder(tmp_path / "raw"), tmp_path / "out"
    assert cli(["align", str(raw), str(out), "--image-size", "32", *given]) == 0
    crops = sorted(p.name for p in (out / "ann").iterdir())
    assert crops == (["a_0.png", "a_1.png"] if multiple else ["a.png"])


def test_align_draws_its_bar_only_on_a_terminal_and_not_with_no_progress(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """`train align` from cron (stderr a file) wrote tqdm's bar into it: one long line of
    carriage-return redraws (about 300 kB for LFW). Now the bar is drawn on a terminal only,
    and --no-progress leaves it out there too, as detect, enroll and identify do."""
    import sys

    from engines.mtcnn import MTCNN

    monkeypatch.setattr(MTCNN, "load", staticmethod(lambda *a, **k: _FakeMtcnn()))
    raw = _raw_folder(tmp_path / "raw")

    def align(out: str, *extra: str) -> str:
        assert cli(["align", str(raw), str(tmp_path / out), "--image-size", "32", *extra]) == 0
        return capsys.readouterr().err

    assert "aligning" not in align("cron") and "\r" not in align("cron2")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert "aligning" in align("terminal")
    assert "aligning" not in align("quiet", "--no-progress")


def test_align_refuses_a_value_that_is_not_true_or_false(tmp_path: Path, capsys) -> None:
    argv = ["align", str(tmp_path), str(tmp_path / "o"), "--detect_multiple_faces", "maybe"]
    with pytest.raises(SystemExit):
        cli(argv)
    assert "'maybe' is not True or False" in capsys.readouterr().err


def test_a_resumed_align_lists_the_images_an_earlier_run_found_no_face_in(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The list file's path-only lines say which; the summary said "without a face: 0"."""
    from engines.mtcnn import MTCNN

    monkeypatch.setattr(MTCNN, "load", staticmethod(lambda *a, **k: _FakeMtcnn()))
    raw, out = _raw_folder(tmp_path / "raw"), tmp_path / "out"
    argv = ["align", str(raw), str(out), "--image-size", "32"]
    assert cli(argv) == 0
    first = capsys.readouterr().out.splitlines()
    assert first[:2] == [
        "images: 2, aligned now: 1, already done: 0, without a face: 1, unreadable: 0",
        f"  no face: {raw / 'blank' / 'b.png'}",
    ]
    assert cli(argv) == 0
    again = capsys.readouterr().out.splitlines()
    assert again[:2] == [
        "images: 2, aligned now: 0, already done: 2, without a face: 0 (and 1 found by an "
        "earlier run), unreadable: 0",
        f"  no face (earlier run): {raw / 'blank' / 'b.png'}",
    ]


def test_a_resumed_align_skips_a_photo_without_a_face_whose_name_has_spaces(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Its list file line was taken for a box line: every run detected it again, said it
    was found now, and wrote its line once more."""
    import cv2

    from engines.mtcnn import MTCNN

    monkeypatch.setattr(MTCNN, "load", staticmethod(lambda *a, **k: _FakeMtcnn()))
    raw, out = _raw_folder(tmp_path / "raw"), tmp_path / "out"
    (raw / "blank" / "b.png").rename(raw / "blank" / "blank wall 1 2 3.png")
    face = cv2.imread(str(raw / "ann" / "a.png"))
    cv2.imwrite(str(raw / "ann" / "photo 1 2 3 4.png"), face)  # a name that ends in numbers
    argv = ["align", str(raw), str(out), "--image-size", "32"]
    for _ in range(2):
        assert cli(argv) == 0
    capsys.readouterr()
    assert cli(argv) == 0
    again = capsys.readouterr().out.splitlines()[:2]
    assert again == [
        "images: 3, aligned now: 0, already done: 3, without a face: 0 (and 1 found by an "
        "earlier run), unreadable: 0",
        f"  no face (earlier run): {raw / 'blank' / 'blank wall 1 2 3.png'}",
    ]
    lines = (out / "bounding_boxes.txt").read_text().splitlines()
    assert lines.count(str(out / "blank" / "blank wall 1 2 3.png")) == 1 and len(lines) == 3


def test_align_takes_the_folders_and_photos_enroll_takes(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A NAS's @eaDir became an identity of the aligned set, and macOS's ._ files were
    listed as unreadable images."""
    import cv2

    from engines.mtcnn import MTCNN

    monkeypatch.setattr(MTCNN, "load", staticmethod(lambda *a, **k: _FakeMtcnn()))
    raw, out = _raw_folder(tmp_path / "raw"), tmp_path / "out"
    (raw / "ann" / "._a.png").write_bytes(b"\x00\x05\x16\x07Mac OS X" + bytes(100))
    for junk in ("@eaDir/a.png", ".thumbnails/a.png", "ann/@eaDir/a.png"):
        (raw / junk).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(raw / junk), np.full((100, 100, 3), 7, np.uint8))
    assert cli(["align", str(raw), str(out), "--image-size", "32"]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    assert summary.startswith("images: 2, aligned now: 1,") and summary.endswith("unreadable: 0")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ann"]


def test_align_takes_the_jpegs_heif_convert_left_and_notes_what_it_left_out(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """IMG_1.png beside IMG_1.HEIC (what heif-convert leaves) refused the whole dataset:
    'photos that share a name but for the suffix ...; rename them apart'; and the files left
    out (a .txt, a HEIC with no JPEG) went unsaid, though the README promised a note."""
    from engines.mtcnn import MTCNN

    monkeypatch.setattr(MTCNN, "load", staticmethod(lambda *a, **k: _FakeMtcnn()))
    raw, out = _raw_folder(tmp_path / "raw"), tmp_path / "out"
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(500)
    (raw / "ann" / "a.HEIC").write_bytes(heic)  # converted: a.png is beside it
    (raw / "blank" / "IMG_0002.HEIC").write_bytes(heic)
    (raw / "ann" / "notes.txt").write_text("taken in May\n")
    assert cli(["align", str(raw), str(out), "--image-size", "32"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith("images: 2, aligned now: 1,") and said[0].endswith("unreadable: 0")
    assert (
        f"note: {raw}: left out 1 file(s) that are not photos by their extension: "
        "ann/notes.txt; left out 1 (blank/IMG_0002.HEIC): HEIC/HEIF photos (an iPhone's "
        "default) are not read: convert them to JPEG" in said[-2]  # before "crops in ..."
    )


def _not_checkpoints(tmp_path: Path) -> list[Path]:
    import sqlite3

    text = tmp_path / "notckpt.pt"
    text.write_text("hello, not weights\n")  # torch.load: KeyError: 101
    database = tmp_path / "some.sqlite"  # torch.load: advice to load it unsafely
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("create table t (x)")
    return [text, database]


@needs_shared
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    data = celeba_people(tmp_path / "data", [2, 2])
    for path in _not_checkpoints(tmp_path):
        commands = [
            ["export", str(path), "--out", str(tmp_path / "x.onnx")],
            ["triplet", "--data-dir", str(data), "--pretrained-model", str(path),
             "--models-base-dir", str(tmp_path / "m"), "--logs-base-dir", str(tmp_path / "l"),
             "--image-size", "80", "--gpu", "cpu", "--workers", "0"],
            ["validate", str(path), "--lfw-dir", str(data), "--lfw-pairs", str(path)],
        ]  # fmt: skip
        for argv in commands:
            assert cli(argv) == 2, argv
            err = capsys.readouterr().err
            assert err == f"error: {path}: not a PyTorch checkpoint or state dict\n", argv
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "m").exists()


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        cli([command, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # unwrapped


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("align", ["crop size in pixels (default: 182)", "side) (default: 44)",
                   "(default: margin)", "output image format (default: png)"]),
        ("triplet", ["(default: ~/datasets/casia/casia_maxpy_mtcnnalign_182_160)",
                     "number of epochs to run (default: 500)", "batches per epoch (default: 1000)",
                     "(default: 3)", "LFW pairs file (default: data/pairs.txt)",
                     "--random-crop, --no-random-crop, --random_crop, --no-random_crop random "
                     "crops of image_size from larger training images (else centre crop) "
                     "(default: off)"]),
        ("validate", ["images per embedding batch (default: 100)", "(default: fp32)"]),
        ("export", ["model name in the sidecar (default: facenet)",
                    "crops used for the parity check (default: 16)"]),
    ],
)  # fmt: skip
def test_help_shows_the_defaults(command: str, expected: list[str], capsys) -> None:
    text = _help(command, capsys)
    for phrase in expected:
        assert phrase in text, phrase
    assert "(default: None)" not in text and "(default: )" not in text


def test_help_says_where_triplet_differs_from_the_original(capsys) -> None:
    """A user porting a train_tripletloss.py command line learns from --help which defaults
    and choices are not the original's (the help said only "prewhiten: per-image mean/std")."""
    text = _help("triplet", capsys).replace("facenet- pytorch", "facenet-pytorch")  # wrapped
    assert (
        "fixed: (x-127.5)/128, as facenet-pytorch's published weights were trained (not the "
        "original's); prewhiten: per-image mean/std, as the original train_tripletloss.py "
        "always does (default: fixed)"
    ) in text
    assert "updating as its TensorFlow 1.x did" in text and "ADAM_TORCH: torch.optim.Adam" in text


def test_on_off_flags_say_on_or_off_under_python_3_10() -> None:
    import argparse

    from training.help_format import DefaultsHelpFormatter

    p = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True, help="flips")
    p.add_argument("--crop", action=argparse.BooleanOptionalAction, default=False, help="crops")
    for action in p._actions[1:]:  # as Python 3.10's BooleanOptionalAction writes its help
        action.help = (action.help or "").removesuffix(" (default: %(default)s)")
        action.help += " (default: %(default)s)"
    text = " ".join(p.format_help().split())
    assert "flips (default: on)" in text and "crops (default: off)" in text, text
    assert "True" not in text and "False" not in text


def test_a_bad_recipe_value_names_the_file_and_key(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "badval.yaml"
    recipe.write_text("image_size: -3\nbatch-size: 10\n")
    argv = ["triplet", "--config", str(recipe), "--data-dir", str(tmp_path)]
    assert cli(argv) == 2
    assert f"error: {recipe}: image_size: -3: must be >= 75 pixels" in capsys.readouterr().err
    assert cli([*argv, "--image-size", "80"]) == 2  # the next bad one, as the recipe spells it
    assert f"error: {recipe}: batch-size: 10: must be a multiple of 3" in capsys.readouterr().err
    assert cli([*argv, "--image-size", "-3"]) == 2  # the command line's own value: the flag
    assert "error: --image-size -3: must be >= 75 pixels" in capsys.readouterr().err
    recipe.write_text("image_size:\nteacher:\n")  # a key without a value
    assert cli(argv) == 2
    assert capsys.readouterr().err == f"error: {recipe}: image_size: needs a value\n"
    recipe.write_text("teacher:\n")  # None is its default: the key says nothing
    assert cli([*argv, "--max-nrof-epochs", "0"]) == 2
    assert "error: --max-nrof-epochs 0: must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "training").glob("*.yaml")), ids=str)
def test_the_shipped_recipes_pass_the_option_checks(recipe: Path, tmp_path: Path) -> None:
    import argparse

    from training.train_options import apply_config, build_parser, check_options

    parser = build_parser(argparse.ArgumentParser())
    args = parser.parse_args(["--config", str(recipe), "--data-dir", str(tmp_path)])
    apply_config(args, parser)  # an unknown key or a mistyped value raises, naming it
    check_options(args)
    if args.loss == "distill" and str(args.teacher).endswith(".onnx"):
        assert (REPO / args.teacher).is_file(), f"{recipe}: teacher {args.teacher} is not shipped"


def _validate(tmp_path: Path, pairs: Path, *more: str) -> int:
    checkpoint = tmp_path / "tiny.pt"
    if not checkpoint.is_file():
        tiny_checkpoint(checkpoint)
    lfw = ["--lfw-dir", str(SHARED / "lfw" / "images"), "--lfw-pairs", str(pairs)]
    return cli(["validate", str(checkpoint), *lfw, "--out-dir", str(tmp_path / "val"), *more])


@needs_shared
def test_validate_takes_the_folds_of_the_pairs_file(tmp_path: Path, capsys, caplog) -> None:
    import json

    pairs = lfw_pairs(tmp_path / "pairs_small.txt", "2\t5")
    assert _validate(tmp_path, pairs) == 0
    report = json.loads((tmp_path / "val" / "lfw.json").read_text())
    assert len(report["fold_accuracies"]) == 2 and report["nrof_pairs"] == 20
    # asked for other folds than the file's: said, and refused where a fold holds one kind
    with caplog.at_level(logging.WARNING):
        assert _validate(tmp_path, pairs, "--lfw-nrof-folds", "10") == 2
    assert "pairs_small.txt declares 2 folds; evaluating with 10" in caplog.text
    err = capsys.readouterr().err
    assert f"{pairs}: fold 1 of 10 (pairs 1-2) holds only same pairs" in err, err
    # a file not written fold by fold: refused, not an accuracy far below chance
    unsorted = lfw_pairs(tmp_path / "unsorted.txt", "2\t5", by_fold=False)
    assert _validate(tmp_path, unsorted) == 2
    assert "fold 1 of 2 (pairs 1-10) holds only same pairs" in capsys.readouterr().err


def test_small_mistakes_are_named_with_the_option(tmp_path, capsys) -> None:
    """A file for align's input folder, a face size below P-Net's, a missing --parity-images
    folder, an --out that cannot be written, a --gpu that is no device: each named."""

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    assert cli(["align", str(photo), str(tmp_path / "out")]) == 2
    assert f"{photo}: a file, not a folder" in capsys.readouterr().err
    people = tmp_path / "people"
    (people / "ann").mkdir(parents=True)
    assert cli(["align", str(people), str(tmp_path / "out"), "--min-face-size", "0"]) == 2
    assert "--min-face-size 0: must be >= 12 and <= 1000 pixels" in capsys.readouterr().err
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "m.onnx"
    assert cli(["export", str(checkpoint), "--out", str(out), "--parity-images", "nodir"]) == 2
    assert "--parity-images nodir: no such folder" in capsys.readouterr().err
    blocked = tmp_path / "afile" / "m.onnx"
    blocked.parent.write_text("")
    assert cli(["export", str(checkpoint), "--out", str(blocked)]) == 2
    assert f"--out {blocked}: cannot be written" in capsys.readouterr().err
    assert cli(["triplet", "--data-dir", str(people), "--gpu", "foo"]) == 2
    assert "--gpu foo: expected a CUDA device index" in capsys.readouterr().err


@needs_celeba
def test_a_default_that_names_a_missing_file_says_it_is_the_default(tmp_path, capsys) -> None:
    """The original's defaults name files few have (data/pairs.txt, a schedule file): an error
    about one says it came from no option the user gave."""
    people = celeba_people(tmp_path / "people", [3, 3])
    assert cli(["triplet", "--data-dir", str(people), "--lfw-dir", str(people)]) == 2
    assert (
        "pairs.txt (the default): pairs file not found (for --lfw-dir)" in capsys.readouterr().err
    )
    assert cli(["triplet", "--data-dir", str(people), "--learning-rate", "0"]) == 2
    err = capsys.readouterr().err
    assert "--learning-rate 0.0 asks for a schedule" in err and "(the default) does not" in err
