"""Bad inputs give clear errors naming the thing; augmentation and recipes behave."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from training.data import Augment, DataError, FaceImages, load_dataset, load_rgb
from training.schedule import learning_rate, read_schedule
from training.train_options import OptionError, apply_config, build_parser, check_options

REPO = Path(__file__).resolve().parents[2]


def _face_png(path: Path, value: int = 100, size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((size, size, 3), value, np.uint8)
    image[:, : size // 2] = 255 - value  # left half differs, so flips are visible
    cv2.imwrite(str(path), image)
    return path


def test_empty_identity_folder_is_named(tmp_path) -> None:
    _face_png(tmp_path / "anna" / "1.png")
    (tmp_path / "bert").mkdir()
    with pytest.raises(DataError, match=r"bert: identity folder holds no images"):
        load_dataset(tmp_path)


def test_an_identity_of_heic_photos_holds_no_images_and_says_how_to_convert_them(
    tmp_path,
) -> None:
    """An identity of iPhone photos was taken, then failed mid-run: 'no image of ... can be
    read'."""
    _face_png(tmp_path / "anna" / "1.png")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(500))
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'bert'}: identity folder holds no images")
    assert "left out 1 (IMG_0001.HEIC): HEIC/HEIF photos (an iPhone's default)" in str(info.value)


def test_missing_dataset_and_no_identities(tmp_path) -> None:
    with pytest.raises(DataError, match="nowhere: dataset directory not found"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no identity folders"):
        load_dataset(tmp_path)


def test_a_nas_or_mac_folders_thumbnails_are_no_identity_and_no_image(tmp_path) -> None:
    """A Synology NAS's @eaDir was trained on as a person, macOS's ._ files as images."""
    _face_png(tmp_path / "anna" / "1.png")
    jfif = tmp_path / "anna" / "photo.jfif"  # a JPEG as Windows browsers name it
    jfif.write_bytes((tmp_path / "anna" / "1.png").read_bytes())
    (tmp_path / "anna" / "._1.png").write_bytes(b"\x00\x05\x16\x07Mac OS X" + bytes(100))
    _face_png(tmp_path / "@eaDir" / "1.png")
    _face_png(tmp_path / ".thumbnails" / "1.png")
    dataset = load_dataset(tmp_path)
    assert [(c.name, [p.name for p in c.image_paths]) for c in dataset] == [
        ("anna", ["1.png", "photo.jfif"])
    ]


def test_corrupt_image_is_named_and_a_run_goes_on_with_another_of_its_identity(
    tmp_path, caplog
) -> None:
    import logging

    import cv2

    bad = tmp_path / "anna" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match=r"broken.jpg"):
        load_rgb(bad)
    good = tmp_path / "anna" / "good.png"
    cv2.imwrite(str(good), np.full((80, 80, 3), 200, np.uint8))
    other = tmp_path / "bob" / "b.png"
    other.parent.mkdir()
    cv2.imwrite(str(other), np.full((80, 80, 3), 10, np.uint8))
    images = FaceImages([bad, good, other], [0, 0, 1], Augment(image_size=80))
    with caplog.at_level(logging.WARNING):
        image, label, index = images[0]
    assert (label, index) == (0, 0) and int(image.float().mean()) == 200  # anna's good one
    assert "broken.jpg" in caplog.text and "another image of the same identity" in caplog.text
    alone = FaceImages([bad], [0], Augment(image_size=80))
    with pytest.raises(DataError, match=r"no image of .*anna can be read"):
        alone[0]


def test_classes_are_sorted_and_small_ones_left_out(tmp_path) -> None:
    for name, n in [("zed", 3), ("amy", 2), ("bob", 1)]:
        for i in range(n):
            _face_png(tmp_path / name / f"{i}.png")
    dataset = load_dataset(tmp_path, min_images=2)
    assert [(c.name, len(c)) for c in dataset] == [("amy", 2), ("zed", 3)]


def test_centre_crop_random_crop_and_flip() -> None:
    image = np.arange(100 * 100 * 3, dtype=np.uint32).reshape(100, 100, 3).astype(np.uint8)
    fixed = Augment(image_size=80)
    a = fixed(image, np.random.default_rng(0))
    b = fixed(image, np.random.default_rng(1))
    assert a.shape == (3, 80, 80) and np.array_equal(a, b)  # centre crop: no randomness
    assert a.dtype == np.uint8 and np.array_equal(a, image[10:90, 10:90].transpose(2, 0, 1))
    crops = {
        Augment(80, random_crop=True)(image, np.random.default_rng(s)).tobytes() for s in range(6)
    }
    assert len(crops) > 1
    flips = [Augment(80, random_flip=True)(image, np.random.default_rng(s)) for s in range(8)]
    mirrored = [np.array_equal(f, a[:, :, ::-1]) for f in flips]
    plain = [np.array_equal(f, a) for f in flips]
    assert (
        any(mirrored) and any(plain) and all(m or p for m, p in zip(mirrored, plain, strict=True))
    )


def _args(*extra: str):
    return build_parser().parse_args(["--data-dir", "x", *extra])


def test_original_defaults_and_spellings() -> None:
    args = _args("--people_per_batch", "30", "--max-nrof-epochs", "7")
    assert (args.batch_size, args.image_size, args.images_per_person, args.epoch_size) == (
        90,
        160,
        40,
        1000,
    )
    assert (args.alpha, args.embedding_size, args.keep_probability, args.optimizer) == (
        0.2,
        128,
        1.0,
        "ADAGRAD",
    )
    assert (args.learning_rate, args.moving_average_decay, args.seed) == (0.1, 0.9999, 666)
    assert args.lfw_nrof_folds is None  # the pairs file's header: 10 for LFW's pairs.txt
    assert (args.people_per_batch, args.max_nrof_epochs) == (30, 7)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--image-size", "60"], "--image-size 60: must be >= 75"),
        (["--batch-size", "91"], "--batch-size 91: must be a multiple of 3"),
        (["--keep-probability", "1.5"], "--keep-probability 1.5: must be in (0, 1]"),
        (["--images-per-person", "1"], "--images-per-person 1: must be >= 2"),
        (["--moving-average-decay", "1"], "--moving-average-decay 1.0: must be in [0, 1)"),
        (["--loss", "distill"], "--loss distill needs --teacher"),
        (["--random-rotate", "10"], "--random-rotate 10.0 is for --loss distill"),
        (
            ["--loss", "distill", "--teacher", "t.onnx", "--random-scale", "0.7"],
            "--random-scale 0.7: must be in [0, 0.5]",
        ),
        (
            ["--loss", "distill", "--teacher", "t.npz", "--random-color", "0.2"],
            "--random-color 0.2 needs an ONNX teacher",
        ),
        (
            ["--learning-rate", "-1", "--learning-rate-schedule-file", "/no/such"],
            "/no/such does not exist",
        ),
    ],
)
def test_options_out_of_range_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(OptionError) as err:
        check_options(_args(*argv))
    assert message in str(err.value)


def test_out_of_range_option_fails_the_command(capsys) -> None:
    from training.cli_facenet import main

    assert main(["triplet", "--data-dir", "x", "--alpha", "0"]) == 2
    assert "--alpha 0.0: must be > 0" in capsys.readouterr().err


def test_schedule_file_and_decay(tmp_path) -> None:
    schedule = tmp_path / "lr.txt"
    schedule.write_text("# epoch: rate\n0: 0.1\n3: 0.01  # later\n6: -\n")
    assert [read_schedule(schedule, e) for e in (0, 2, 3, 5, 6)] == [0.1, 0.1, 0.01, 0.01, None]
    original = tmp_path / "learning_rate_schedule_classifier_vggface2.txt"  # its last line
    original.write_text("0: 0.05\n100: 0.005\n276: -1\n")
    assert [read_schedule(original, e) for e in (99, 100, 275, 276)] == [0.05, 0.005, 0.005, None]
    args = _args(
        "--learning-rate",
        "-1",
        "--learning-rate-schedule-file",
        str(schedule),
        "--epoch-size",
        "10",
    )
    assert learning_rate(args, epoch=4, step=40) == pytest.approx(0.01)
    args = _args(
        "--learning-rate",
        "0.5",
        "--learning-rate-decay-epochs",
        "2",
        "--learning-rate-decay-factor",
        "0.1",
        "--epoch-size",
        "10",
    )
    assert [learning_rate(args, 0, s) for s in (0, 19, 20, 45)] == pytest.approx(
        [0.5, 0.5, 0.05, 0.005]
    )


def test_center_loss_reads_the_schedule_from_epoch_1_as_train_softmax(tmp_path) -> None:
    """The original's center-loss trainer (train_softmax.py) numbers its epochs from 1: with
    its classifier schedule the 100th epoch trains at 0.005 and the 275th is the last
    (facewatch switched at the 101st and stopped after the 276th). Triplet keeps
    train_tripletloss.py's count from 0: the 101st epoch switches."""
    original = tmp_path / "learning_rate_schedule_classifier_vggface2.txt"
    original.write_text("0: 0.05\n100: 0.005\n276: -1\n")
    flags = ("--learning-rate", "-1", "--learning-rate-schedule-file", str(original))
    center = _args(*flags, "--loss", "center")
    # run epochs are 0-based: 98 is the 99th epoch
    assert [learning_rate(center, e, 0) for e in (98, 99, 274, 275)] == [0.05, 0.005, 0.005, None]
    triplet = _args(*flags)
    assert [learning_rate(triplet, e, 0) for e in (99, 100, 275, 276)] == [0.05, 0.005, 0.005, None]


def test_cosine_time_anneal_follows_the_time_limit_not_the_epochs() -> None:
    args = _args("--learning-rate", "0.002", "--lr-anneal", "cosine-time", "--time-limit-min", "2")
    at = [learning_rate(args, epoch=9, step=999, elapsed_s=s) for s in (0, 30, 60, 120, 500)]
    assert at == pytest.approx([0.002, 0.002 * (1 + 0.5**0.5) / 2, 0.001, 0.0, 0.0], abs=1e-12)


def test_cosine_time_anneal_needs_a_time_limit() -> None:
    with pytest.raises(OptionError, match=r"--lr-anneal cosine-time needs a time limit"):
        check_options(_args("--lr-anneal", "cosine-time"))


def test_recipe_fills_defaults_but_not_the_command_line(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("image-size: 96\nbatch_size: 30\noptimizer: adam\n")
    args = _args("--config", str(recipe), "--batch-size", "12")
    apply_config(args, build_parser())
    assert (args.image_size, args.batch_size, args.optimizer) == (96, 12, "ADAM")
    # the command line wins even where it repeats the built-in default
    args = _args("--config", str(recipe), "--optimizer", "ADAGRAD", "--image-size", "160")
    apply_config(args, build_parser())
    assert (args.image_size, args.batch_size, args.optimizer) == (160, 30, "ADAGRAD")
    recipe.write_text("image_sise: 96\n")
    with pytest.raises(OptionError, match="unknown option 'image_sise'"):
        apply_config(_args("--config", str(recipe)), build_parser())


@pytest.mark.parametrize(
    "recipe", sorted((REPO / "configs" / "training").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_recipes_are_valid(recipe: Path) -> None:
    args = _args("--config", str(recipe))
    apply_config(args, build_parser())
    if args.learning_rate > 0:
        check_options(args)


def test_one_persistent_loader_serves_changing_batches(tmp_path) -> None:
    import torch
    from torch.utils.data import DataLoader

    from training.data import BatchPlan

    paths = [_face_png(tmp_path / "p" / f"{i}.png", value=20 * i) for i in range(6)]
    images = FaceImages(
        paths, list(range(6)), Augment(80, random_crop=True, random_flip=True), seed=3
    )
    plan = BatchPlan()
    loader = DataLoader(images, batch_sampler=plan, num_workers=2, persistent_workers=True)
    for batches in ([[(0, 1), (5, 1)], [(2, 1)]], [[(3, 7), (3, 8), (1, 7)]]):
        plan.batches = batches
        got = list(loader)
        assert [b[2].tolist() for b in got] == [[k[0] for k in batch] for batch in batches]
        for (x, _, _), batch in zip(got, batches, strict=True):
            expected = torch.stack([images[k][0] for k in batch])
            assert torch.equal(x, expected)  # same augmentation in a worker as in-process
    # the round is part of the key: another round, another random crop of the same image
    assert not torch.equal(images[(3, 7)][0], images[(3, 8)][0])


@pytest.mark.parametrize("method", ["fixed", "prewhiten"])
def test_batches_are_standardised_as_single_images_are(method) -> None:
    """The training loop standardises the loader's uint8 batches (on the GPU, there) as the
    embedders standardise photos: the same numbers, also for a flat image (prewhitening's
    floor on the standard deviation) and in channels-last layout."""
    import torch

    from training.data import standardize, standardize_batch

    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    images[2] = 77
    expected = standardize(images, method).transpose(0, 3, 1, 2)
    batch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    for layout in (torch.contiguous_format, torch.channels_last):
        got = standardize_batch(batch.contiguous(memory_format=layout), method)
        assert got.dtype == torch.float32
        assert np.allclose(got.numpy(), expected, atol=1e-5), layout
    with pytest.raises(ValueError, match="unknown standardization 'none'"):
        standardize_batch(batch, "none")


@pytest.mark.parametrize("method", ["fixed", "prewhiten"])
def test_standardize_gives_float32_the_network_accepts(method):
    from training.data import standardize

    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    out = standardize(images, method)
    assert out.dtype == np.float32 and out.shape == images.shape
    if method == "prewhiten":
        assert np.allclose(out.reshape(2, -1).mean(axis=1), 0, atol=1e-5)


def test_a_recipe_flag_takes_true_or_false(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("random_flip: 'false'\n")
    with pytest.raises(OptionError, match="random_flip: 'false': an on/off option takes true or false"):  # fmt: skip
        apply_config(_args("--config", str(recipe)), build_parser())
    recipe.write_text("random_flip: true\n")
    args = _args("--config", str(recipe), "--no-random-flip")
    apply_config(args, build_parser())
    assert args.random_flip is False  # the command line's --no- form wins


def test_warp_batch_warps_reproducibly_and_is_identity_when_off() -> None:
    """Distillation's device-side warps: none asked, the pixels as they were; asked, each crop
    changed differently, within 0-255, the same again from the same seed."""
    import torch

    from training.data import warp_batch

    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (4, 3, 40, 40), dtype=np.uint8))
    same = warp_batch(pixels, torch.Generator().manual_seed(1))
    assert same.dtype == torch.float32 and torch.equal(same, pixels.float())
    # a 10-degree rotation alone moves pixels; a brightness change alone keeps the layout
    warped = warp_batch(pixels, torch.Generator().manual_seed(1), rotate=10, scale=0.1, color=0.3)
    again = warp_batch(pixels, torch.Generator().manual_seed(1), rotate=10, scale=0.1, color=0.3)
    assert torch.equal(warped, again)
    assert warped.shape == pixels.shape and warped.min() >= 0 and warped.max() <= 255
    change = (warped - pixels.float()).abs().mean(dim=(1, 2, 3))
    assert (change > 5).all() and len(set(change.tolist())) == 4
    # the warp keeps the crop's centre where it was: a centred blob stays centred
    blob = torch.zeros((1, 3, 41, 41), dtype=torch.uint8)
    blob[:, :, 17:24, 17:24] = 255
    turned = warp_batch(blob, torch.Generator().manual_seed(2), rotate=30, scale=0.2)
    ys, xs = torch.nonzero(turned[0, 0] > 127, as_tuple=True)
    assert abs(ys.float().mean() - 20) < 0.6 and abs(xs.float().mean() - 20) < 0.6


@pytest.mark.parametrize(("alignment", "warned"), [("margin", True), ("similarity", False)])
def test_a_margin_other_than_the_crops_is_a_warning_for_margin_crops_only(
    tmp_path: Path, caplog, alignment: str, warned: bool
) -> None:
    """Margin crops are framed by their margin, which the export records; crops warped onto
    landmarks are framed by the landmarks, their margin only room for random crops."""
    import json
    import logging

    from training.run_checks import check_crops

    (tmp_path / "alignment.json").write_text(
        json.dumps({"image_size": 170, "margin": 10, "alignment": alignment})
    )
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--margin", "32"])
    with caplog.at_level(logging.WARNING):
        check_crops(args)
    assert args.margin == 10  # the crops' own, either way
    assert ("differs from the margin" in caplog.text) is warned


@pytest.mark.parametrize(
    ("crops", "image_size", "warned"),
    [(182, 160, False), (170, 160, False), (102, 96, False), (160, 80, True), (250, 160, True)],
)
def test_crops_far_larger_than_the_image_size_are_a_warning(
    tmp_path: Path, caplog, crops: int, image_size: int, warned: bool
) -> None:
    """--random-crop of 80 px from 160 px crops trains on the middle of each face, which the
    exported model then never sees alone: said before training, with the size to align at."""
    import json
    import logging

    from training.run_checks import check_crops

    (tmp_path / "alignment.json").write_text(
        json.dumps({"image_size": crops, "margin": 32, "alignment": "margin"})
    )
    args = build_parser().parse_args(
        ["--data-dir", str(tmp_path), "--image-size", str(image_size), "--margin", "32"]
    )
    with caplog.at_level(logging.WARNING):
        check_crops(args)
    assert ("trains on their central" in caplog.text) is warned, caplog.text
    if warned:
        assert f"align at about {round(1.14 * image_size)} px for {image_size}" in caplog.text


def test_unaligned_lfw_and_distillation_crops_out_of_the_teachers_framing_are_warnings(
    tmp_path: Path, caplog
) -> None:
    import json
    import logging

    from training.run_checks import check_crops

    data, lfw = tmp_path / "crops", tmp_path / "lfw"
    data.mkdir()
    lfw.mkdir()
    (data / "alignment.json").write_text(
        json.dumps({"image_size": 182, "margin": 44, "alignment": "margin"})
    )
    options = ["--data-dir", str(data), "--lfw-dir", str(lfw), "--margin", "44"]
    args = build_parser().parse_args([*options, "--loss", "distill", "--teacher", "t.onnx"])
    with caplog.at_level(logging.WARNING):
        check_crops(args)
    assert f"--lfw-dir {lfw} has no alignment.json" in caplog.text
    assert "not warped onto a teacher's landmark template" in caplog.text
    caplog.clear()
    (lfw / "alignment.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        check_crops(build_parser().parse_args(options))  # triplet: margin crops are its own
    assert caplog.text == ""


def test_batch_settings_beyond_the_dataset_are_a_warning(tmp_path: Path, caplog) -> None:
    import logging

    from training.data import ImageClass
    from training.run_checks import check_identities

    dataset = [ImageClass(f"p{k}", [tmp_path / f"{k}-{i}.png" for i in range(4)]) for k in range(5)]
    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--people-per-batch", "45"])
    with caplog.at_level(logging.WARNING):
        check_identities(args, dataset)
    assert "has 5 identities of at most 4 images: --people-per-batch 45 and" in caplog.text
    assert "--images-per-person 40 (the default) takes fewer" in caplog.text
    caplog.clear()
    small = ["--people-per-batch", "5", "--images-per-person", "4", "--data-dir", str(tmp_path)]
    with caplog.at_level(logging.WARNING):
        check_identities(build_parser().parse_args(small), dataset)
    assert caplog.text == ""


@pytest.mark.parametrize(("aligned", "size", "warned"), [(False, 300, 2), (True, 300, 1),
                                                         (False, 96, 1), (True, 96, 0)])  # fmt: skip
def test_raw_photos_as_the_data_dir_are_a_warning_naming_train_align(
    tmp_path: Path, caplog, aligned: bool, size: int, warned: int
) -> None:
    """Photos given as --data-dir (train align skipped) would train on a central patch of
    each: no alignment.json, or images far larger than --image-size, is said before training."""
    import json
    import logging

    import cv2
    import numpy as np

    from training.data import load_dataset
    from training.run_checks import check_crops

    for person in ("ada", "bob"):
        (tmp_path / person).mkdir()
        for k in range(2):
            cv2.imwrite(
                str(tmp_path / person / f"{k}.jpg"), np.full((size, size + 40, 3), 128, np.uint8)
            )
    if aligned:
        (tmp_path / "alignment.json").write_text(
            json.dumps({"image_size": 96, "margin": 16, "alignment": "margin"})
        )
    args = build_parser().parse_args(
        ["--data-dir", str(tmp_path), "--image-size", "80", "--margin", "16"]
    )
    with caplog.at_level(logging.WARNING):
        check_crops(args, load_dataset(tmp_path))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == warned, said
    if not aligned:
        assert f"--data-dir {tmp_path} has no alignment.json: its images are taken as aligned " \
               f"face crops" in said[0] and f"`facewatch train align {tmp_path} ALIGNED`" in said[0]  # fmt: skip
    if size == 300:
        assert f"--data-dir {tmp_path}: its images are 300 px or more on their short side (2 " \
               "of them read), over 1.5x --image-size 80: training crops their central 80 px " \
               "and never resizes them, so it sees 7 % of each or less" in said[-1]  # fmt: skip
