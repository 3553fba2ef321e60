"""A tiny real run: align CelebA photos -> 2 epochs of triplet training -> LFW validation
-> ONNX export -> the engines give the checkpoint's embeddings. Also: a crash mid-epoch
resumes from the last checkpoint and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.align import AlignOptions, align_dataset  # noqa: E402
from training.cli_facenet import main as cli  # noqa: E402

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[2]
IDENTITIES, IMAGES_PER_IDENTITY = 6, 8
TRAIN = [
    "--image-size", "80", "--batch-size", "12", "--people-per-batch", "4",
    "--images-per-person", "3", "--epoch-size", "2", "--max-nrof-epochs", "2",
    "--random-crop", "--random-flip", "--workers", "0", "--gpu", "cpu",
    "--moving-average-decay", "0.99", "--embedding-size", "32", "--seed", "7",
]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SHARED / "celeba").is_dir(), reason=f"shared data not found at {SHARED}"
    ),
]


@pytest.fixture(autouse=True, scope="module")
def _no_onednn_warmup():
    """oneDNN compiles kernels per input shape (tens of seconds on 2 cores); the plain CPU
    kernels give the same numbers and keep the test short."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = before


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A few CelebA identities (linked), plus one photo without a face and one corrupt file."""
    root = tmp_path_factory.mktemp("raw")
    people = sorted(
        p for p in (SHARED / "celeba").iterdir() if len(list(p.iterdir())) >= IMAGES_PER_IDENTITY
    )
    for person in people[:IDENTITIES]:
        (root / person.name).mkdir()
        for image in sorted(person.iterdir())[:IMAGES_PER_IDENTITY]:
            (root / person.name / image.name).symlink_to(image)
    cv2.imwrite(str(root / people[0].name / "blank.png"), np.full((120, 120, 3), 128, np.uint8))
    (root / people[1].name / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    return root


@pytest.fixture(scope="module")
def aligned(raw: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("aligned")
    summary = align_dataset(
        raw, out, AlignOptions(image_size=96, margin=16, threads=2), REPO / "models" / "mtcnn"
    )
    return out, summary


def test_align_writes_crops_reports_failures_and_resumes(aligned, raw) -> None:
    out, summary = aligned
    assert summary.images == IDENTITIES * IMAGES_PER_IDENTITY + 2
    assert [p.name for p in summary.without_face] == ["blank.png"]
    assert len(summary.unreadable) == 1 and "corrupt.jpg" in summary.unreadable[0][1]
    crops = sorted(out.glob("*/*.png"))
    assert len(crops) == summary.aligned >= IDENTITIES * IMAGES_PER_IDENTITY - 3
    assert all(cv2.imread(str(c)).shape == (96, 96, 3) for c in crops[:5])
    boxes = (out / "bounding_boxes.txt").read_text().splitlines()
    assert sum(len(line.split()) == 5 for line in boxes) == len(crops)
    assert json.loads((out / "alignment.json").read_text())["margin"] == 16
    again = align_dataset(
        raw, out, AlignOptions(image_size=96, margin=16, threads=2), REPO / "models" / "mtcnn"
    )
    assert again.aligned == 0 and again.skipped == summary.aligned + 1  # crops and the blank
    assert (out / "bounding_boxes.txt").read_text().splitlines() == boxes
    # other settings into the same folder would mix two kinds of crops (jpg beside png:
    # every face twice): refused, the folder left as it was
    for changed in ({"image_size": 112}, {"image_format": "jpg"}):
        options = AlignOptions(**{"image_size": 96, "margin": 16, "threads": 2, **changed})
        with pytest.raises(ValueError, match=r"was aligned with .* this run asks for"):
            align_dataset(raw, out, options, REPO / "models" / "mtcnn")
    assert sorted(out.glob("*/*.*g")) == crops


@pytest.fixture(scope="module")
def trained(aligned, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("runs")
    argv = ["triplet", "--data-dir", str(aligned[0]), "--models-base-dir", str(base / "models"),
            "--logs-base-dir", str(base / "logs"), "--run-name", "full", *TRAIN]  # fmt: skip
    assert cli(argv) == 0
    return base / "models" / "full"


def test_training_writes_checkpoints_and_events(trained: Path) -> None:
    from training.checkpoint import Checkpoint

    ckpt = Checkpoint.load(trained / "latest.pt")
    assert (ckpt.epoch, ckpt.step) == (2, 4)
    assert Checkpoint.load(trained / "epoch-0001.pt").epoch == 1  # kept as it was
    # the newest epoch's file is latest.pt's bytes, stored once (a hard link)
    assert (trained / "epoch-0002.pt").samefile(trained / "latest.pt")
    assert ckpt.extra["margin"] == 16  # from the aligned dataset's alignment.json
    events = list((trained.parent.parent / "logs" / "full").glob("events.out.tfevents.*"))
    pytest.importorskip("torch.utils.tensorboard")
    assert events


def _mini_pairs(path: Path) -> Path:
    """Two folds of 5 same + 5 different pairs from the real LFW pairs.txt."""
    lines = (SHARED / "lfw" / "pairs.txt").read_text().splitlines()
    fold = [lines[1:6] + lines[301:306], lines[6:11] + lines[306:311]]
    path.write_text("2\t5\n" + "\n".join(fold[0] + fold[1]) + "\n")
    return path


MTCNN_ARGS = ["--align", "--mtcnn-dir", str(REPO / "models" / "mtcnn")]


def _lfw_args(tmp_path: Path) -> list[str]:
    pairs = _mini_pairs(tmp_path / "pairs.txt")
    lfw = str(SHARED / "lfw" / "images")
    return ["--lfw-dir", lfw, "--lfw-pairs", str(pairs), "--lfw-nrof-folds", "2"]


def _validate_checkpoint(checkpoint: Path, lfw_args: list[str], out_dir: Path) -> dict:
    assert (
        cli(["validate", str(checkpoint), *lfw_args, *MTCNN_ARGS, "--out-dir", str(out_dir)]) == 0
    )
    report = json.loads((out_dir / "lfw.json").read_text())
    assert 0.0 <= report["accuracy_mean"] <= 1.0 and len(report["fold_accuracies"]) == 2
    assert cv2.imread(str(out_dir / "roc.png")) is not None
    return report


def _export(checkpoint: Path, onnx_path: Path, crops_dir: Path, report: Path) -> None:
    from engines import ModelMetadata

    argv = ["export", str(checkpoint), "--out", str(onnx_path), "--parity-images", str(crops_dir)]
    argv += ["--lfw-report", str(report), "--license", "CC0 (test)", "--torch-program"]
    assert cli(argv) == 0
    meta = ModelMetadata.load(onnx_path)
    assert meta.license == "CC0 (test)"
    assert "| licence | CC0 (test) |" in onnx_path.with_suffix(".md").read_text()
    assert (meta.kind, meta.input_size_hw, meta.embedding_size) == ("facenet", (80, 80), 32)
    assert meta.extra["alignment"] == "margin" and meta.extra["parity_max_abs_diff"] < 1e-4
    assert meta.extra["torch_program"]["max_abs_diff"] < 1e-4
    assert meta.lfw_accuracy == json.loads(report.read_text())["accuracy_mean"]
    assert onnx_path.with_suffix(".md").is_file()
    meta.lfw_accuracy = None  # forget it: `validate --record` must write it back
    meta.save(onnx_path)


def _engine_matches_checkpoint(onnx_path: Path, checkpoint: Path, crops_dir: Path) -> None:
    from engines import ModelMetadata, load_engine
    from training.embedders import TorchEmbedder

    files = sorted(crops_dir.glob("*/*.png"))[:10]
    crops = np.stack(
        [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)[8:88, 8:88] for p in files]
    )
    expected = TorchEmbedder.from_checkpoint(checkpoint).embed_rgb(crops)
    meta = ModelMetadata.load(onnx_path)
    x = ((crops.astype(np.float32) - meta.mean) / meta.std).transpose(0, 3, 1, 2)
    for backend in ("onnxruntime", "torch"):  # the ONNX, and the .pt2 of --torch-program
        engine = load_engine(onnx_path, backend=backend, threads=2)
        feeds = {engine.inputs[0].name: np.ascontiguousarray(x)}
        got = engine.infer(feeds)[engine.outputs[0].name]
        assert got.shape == (10, 32)
        assert np.abs(got - expected).max() < 1e-4
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # L2-norm in the graph


def _onnx_starts_where_the_checkpoint_ended(
    onnx_path: Path, checkpoint: Path, crops_dir: Path
) -> None:
    """--pretrained-model MODEL.onnx: a run continues from an exported model (one that came
    back from a GPU machine without its checkpoint) with the weights it was exported with."""
    from engines import ModelMetadata
    from training.embedders import TorchEmbedder
    from training.facenet_nets import build_model
    from training.run_setup import start_from

    meta = ModelMetadata.load(onnx_path)
    net = build_model("inception_resnet_v1", 32, 0.8)
    start_from(net, onnx_path)
    files = sorted(crops_dir.glob("*/*.png"))[:6]
    crops = np.stack(
        [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)[8:88, 8:88] for p in files]
    )
    x = torch.from_numpy(((crops.astype(np.float32) - meta.mean) / meta.std).transpose(0, 3, 1, 2))
    with torch.no_grad():
        got = net.eval()(x).numpy()
    expected = TorchEmbedder.from_checkpoint(checkpoint).embed_rgb(crops)
    assert np.abs(got - expected).max() < 1e-4


def test_validate_export_and_engine_parity(trained: Path, aligned, tmp_path: Path) -> None:
    from engines import ModelMetadata

    checkpoint, onnx_path, lfw_args = (
        trained / "latest.pt",
        tmp_path / "facenet.onnx",
        _lfw_args(tmp_path),
    )
    report = _validate_checkpoint(checkpoint, lfw_args, tmp_path / "val")
    # the run's folder, as `train triplet` names it at its end, stands for its latest.pt
    assert cli(["validate", str(trained), *lfw_args, *MTCNN_ARGS, "--out-dir", str(tmp_path / "run")]) == 0  # fmt: skip
    by_run = json.loads((tmp_path / "run" / "lfw.json").read_text())
    assert by_run["fold_accuracies"] == report["fold_accuracies"]
    _export(checkpoint, onnx_path, aligned[0], tmp_path / "val" / "lfw.json")
    _engine_matches_checkpoint(onnx_path, checkpoint, aligned[0])
    _onnx_starts_where_the_checkpoint_ended(onnx_path, checkpoint, aligned[0])
    # the ONNX model validates like its checkpoint, and --record writes the figures down
    onnx_bytes = onnx_path.read_bytes()
    assert cli(["validate", str(onnx_path), *lfw_args, *MTCNN_ARGS, "--record"]) == 0
    recorded = ModelMetadata.load(onnx_path)
    assert recorded.extra["lfw"]["fold_accuracies"] == report["fold_accuracies"]
    assert recorded.lfw_accuracy == report["accuracy_mean"]
    assert (
        "LFW measured with: `facewatch train validate" in onnx_path.with_suffix(".md").read_text()
    )
    # in the sidecar and card only: the .pt2, made for these ONNX bytes, still fits them
    assert onnx_path.read_bytes() == onnx_bytes
    assert recorded.extra["lfw"]["nrof_pairs"] == 20 and recorded.extra["lfw"]["pairs"]
    # the original's validate_on_lfw.py options, spelled as it spells them
    original = ["--use_flipped_images", "--distance_metric", "1", "--subtract_mean"]
    out = tmp_path / "original"
    assert cli(["validate", str(onnx_path), *lfw_args, *MTCNN_ARGS, *original, "--out-dir", str(out)]) == 0  # fmt: skip
    angular = json.loads((out / "lfw.json").read_text())
    assert 0.0 <= angular["best_threshold"] <= 1.0 and len(angular["fold_accuracies"]) == 2
    assert (angular["distance_metric"], angular["use_flipped_images"]) == (1, True)
    # the figures of one model are never recorded for another
    other = ["export", str(trained / "epoch-0001.pt"), "--out", str(tmp_path / "o.onnx")]
    assert cli([*other, "--lfw-report", str(tmp_path / "val" / "lfw.json")]) == 2
    assert not (tmp_path / "o.onnx").exists()


def test_int8_export_is_calibrated_checked_and_runs_in_the_engines(
    trained: Path, aligned, tmp_path: Path, monkeypatch, capsys
) -> None:
    from engines import ModelMetadata
    from engines.facenet import FaceNet
    from training.embedders import TorchEmbedder

    out = tmp_path / "int8.onnx"
    argv = ["export", str(trained / "latest.pt"), "--out", str(out), "--int8",
            "--parity-images", str(aligned[0]), "--parity-count", "24"]  # fmt: skip
    assert cli(argv) == 0
    meta = ModelMetadata.load(out)
    assert meta.extra["int8"] and meta.extra["int8_min_cosine"] >= 0.98
    assert "| weights stored as | int8, calibrated" in out.with_suffix(".md").read_text()
    # the daemon's adapter runs it and agrees with the checkpoint on faces it never calibrated on
    files = sorted(aligned[0].glob("*/*.png"))[1::2][:8]
    rgb = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)[8:88, 8:88] for p in files])
    expected = TorchEmbedder.from_checkpoint(trained / "latest.pt").embed_rgb(rgb)
    got = FaceNet.load(out, threads=2).embed(np.ascontiguousarray(rgb[..., ::-1]))
    assert np.sum(expected * got, axis=1).min() >= 0.97
    # too far from fp32: refused, and nothing written: no model where there was none, and
    # with --force the model that was there stays as it was (its sidecar and card too)
    import training.export_facenet as export_facenet

    monkeypatch.setattr(export_facenet, "INT8_MIN_COSINE", 1.0001)
    argv[-1] = "4"  # refused at any cosine: 2 crops to calibrate on and 2 to check will do
    refused = tmp_path / "refused.onnx"
    assert cli([*argv[:3], str(refused), *argv[4:]]) == 2
    assert "int8 embeddings reach only cosine" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("refused*")) == []
    before = {p: p.read_bytes() for p in (out, out.with_suffix(".json"), out.with_suffix(".md"))}
    assert cli([*argv, "--force", "--name", "replaced"]) == 2
    assert f"{out}: int8 embeddings reach only cosine" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.glob(".int8*")) == []  # no staging folder left
    # an int8 model needs crops to calibrate on, and is not also fp16
    assert cli(["export", str(trained / "latest.pt"), "--out", str(out), "--int8", "--force"]) == 2
    assert cli([*argv, "--fp16", "--force"]) != 0


class _Crash(RuntimeError):
    pass


def test_crash_mid_epoch_resumes_from_the_last_checkpoint(
    trained: Path, aligned, tmp_path: Path
) -> None:
    from training.checkpoint import Checkpoint
    from training.train import train
    from training.train_options import build_parser

    argv = ["--data-dir", str(aligned[0]), "--models-base-dir", str(tmp_path / "models"),
            "--logs-base-dir", str(tmp_path / "logs"), "--run-name", "crashy", *TRAIN]  # fmt: skip

    def crash(epoch: int, batch: int, step: int, loss: float) -> None:
        if epoch == 1 and batch == 1:  # second epoch, after its first step
            raise _Crash("power cut")

    with pytest.raises(_Crash):
        train(build_parser().parse_args(argv), on_step=crash)
    run_dir = tmp_path / "models" / "crashy"
    assert Checkpoint.load(run_dir / "latest.pt").epoch == 1

    steps: list[tuple[int, int]] = []
    resumed = build_parser().parse_args([*argv, "--resume", str(run_dir)])
    train(resumed, on_step=lambda e, b, s, loss: steps.append((e, s)))
    assert steps == [(1, 3), (1, 4)]  # only the second epoch ran again
    final, reference = (
        Checkpoint.load(run_dir / "latest.pt"),
        Checkpoint.load(trained / "latest.pt"),
    )
    assert final.epoch == 2
    for name, tensor in reference.model.items():
        assert torch.equal(final.model[name], tensor), name  # same as never having crashed
    assert final.average is not None and reference.average is not None
    for name, tensor in reference.average.items():  # the weight average resumed too
        assert torch.equal(final.average[name], tensor), name


def test_resume_continues_with_the_runs_own_options(
    trained: Path, aligned, tmp_path: Path, capsys
) -> None:
    from training.checkpoint import Checkpoint, adopt_run_options
    from training.train_options import OptionError, apply_config, build_parser

    saved = Checkpoint.load(trained / "latest.pt").options
    args = build_parser().parse_args(["--data-dir", str(aligned[0]), "--resume", str(trained)])
    adopt_run_options(args, saved, trained)
    assert (args.image_size, args.embedding_size, args.alpha) == (80, 32, 0.2)
    assert args.models_base_dir == Path(saved["models_base_dir"])
    args = build_parser().parse_args(["--data-dir", str(aligned[0]), "--max-nrof-epochs", "5"])
    adopt_run_options(args, saved, trained)  # allowed to change, with a warning
    assert args.max_nrof_epochs == 5 and args.image_size == 80
    # a recipe's values count as given; flags can be turned off; --model-def's two spellings
    # are one network
    recipe = tmp_path / "longer.yaml"
    recipe.write_text("max_nrof_epochs: 7\nimage_size: 80\n")
    parser = build_parser()
    argv = ["--data-dir", "d", "--config", str(recipe), "--no-random-crop", "--model-def", "models.inception_resnet_v1"]  # fmt: skip
    args = parser.parse_args(argv)
    apply_config(args, parser)
    adopt_run_options(args, saved, trained)
    assert (args.max_nrof_epochs, args.random_crop, args.random_flip) == (7, False, True)
    args = build_parser().parse_args(["--data-dir", "x", "--embedding-size", "64", "--optimizer", "ADAM"])  # fmt: skip
    with pytest.raises(
        OptionError, match=r"--embedding-size 64 \(the run has 32\); --optimizer ADAM"
    ):
        adopt_run_options(args, saved, trained)
    before = (trained / "latest.pt").read_bytes()
    argv = [
        "triplet",
        "--resume",
        str(trained),
        "--data-dir",
        str(aligned[0]),
        "--image-size",
        "96",
    ]
    assert cli(argv) == 2
    assert "cannot resume with --image-size 96 (the run has 80)" in capsys.readouterr().err
    assert (trained / "latest.pt").read_bytes() == before


def test_align_refuses_photos_that_would_share_a_crop(tmp_path: Path) -> None:
    from training.data import DataError

    face = cv2.imread(str(SHARED / "images" / "obama.jpg"))
    (tmp_path / "in" / "barack").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "in" / "barack" / "a.jpg"), face)
    cv2.imwrite(str(tmp_path / "in" / "barack" / "a.png"), cv2.flip(face, 1))
    opts = AlignOptions(image_size=96, margin=16, threads=2)
    with pytest.raises(DataError, match=r"would share one aligned crop: .*a\.jpg, .*a\.png"):
        align_dataset(tmp_path / "in", tmp_path / "out", opts, REPO / "models" / "mtcnn")
    assert not (tmp_path / "out" / "barack").exists()  # nothing half done


def test_triplet_loss_needs_someone_with_two_images(tmp_path: Path, capsys) -> None:
    for person in ("ann", "ben", "cid"):
        (tmp_path / "one" / person).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "one" / person / "x.png"), np.zeros((96, 96, 3), np.uint8))
    argv = ["triplet", "--data-dir", str(tmp_path / "one"), "--models-base-dir", str(tmp_path)]
    assert cli([*argv, *TRAIN]) == 2
    assert "needs identities with 2 or more images" in capsys.readouterr().err


def test_loader_workers_change_nothing(aligned, tmp_path: Path) -> None:
    """Two epochs with dropout, with the images loaded in the training process and by two
    worker processes: the same losses, step by step, and the same weights. (One step an
    epoch: the workers are seeded again each epoch, and that is what two epochs test.)"""
    from training.checkpoint import Checkpoint
    from training.train import train
    from training.train_options import build_parser

    results = {}
    for workers in ("0", "2"):
        argv = ["--data-dir", str(aligned[0]), "--models-base-dir", str(tmp_path / "m"),
                "--logs-base-dir", str(tmp_path / "l"), "--run-name", f"w{workers}", *TRAIN,
                "--workers", workers, "--keep-probability", "0.6", "--epoch-size", "1"]  # fmt: skip
        losses: list[float] = []
        train(
            build_parser().parse_args(argv),
            on_step=lambda e, b, s, loss, out=losses: out.append(loss),
        )
        results[workers] = (losses, Checkpoint.load(tmp_path / "m" / f"w{workers}" / "latest.pt"))
    (losses0, final0), (losses2, final2) = results["0"], results["2"]
    assert len(losses0) == 2 and losses0 == losses2
    assert all(torch.equal(final0.model[k], final2.model[k]) for k in final0.model)


def test_center_and_distill_losses_train(trained: Path, aligned, tmp_path: Path, caplog) -> None:
    from training.checkpoint import Checkpoint
    from training.distributed import init_from_env
    from training.export_facenet import export_checkpoint
    from training.run_setup import build_run
    from training.train import train_run
    from training.train_options import build_parser, check_options

    teacher, _ = export_checkpoint(trained / "latest.pt", tmp_path / "teacher.onnx")
    cache = tmp_path / "teacher.npz"
    assert cli(["embed", str(aligned[0]), "--model", str(teacher), "--out", str(cache)]) == 0
    base = ["--data-dir", str(aligned[0]), "--models-base-dir", str(tmp_path / "m"),
            "--logs-base-dir", str(tmp_path / "l"), "--max-nrof-epochs", "1", "--epoch-size", "2",
            *TRAIN[:2], "--workers", "0", "--gpu", "cpu", "--batch-size", "8"]  # fmt: skip
    runs = {
        "center": ["--loss", "center"],
        "distill": ["--loss", "distill", "--teacher", str(teacher)],
        "distill-npz": ["--loss", "distill", "--teacher", str(cache)],
    }
    losses: dict[str, list[float]] = {name: [] for name in runs}
    steps: dict[str, list[tuple[int, int, int]]] = {name: [] for name in runs}

    def hook(epoch: int, batch: int, step: int, value: float, name: str) -> None:
        losses[name].append(value)
        steps[name].append((epoch, batch, step))

    unmoved: dict[str, list[str]] = {}
    for name, extra in runs.items():
        args = build_parser().parse_args([*base, "--run-name", name, *extra])
        check_options(args)  # as train() does, keeping the run to look at its network
        run = build_run(
            args, init_from_env(args.gpu), lambda e, b, s, v, k=name: hook(e, b, s, v, k)
        )
        before = {k: v.clone() for k, v in run.net.named_parameters()}
        with caplog.at_level(logging.INFO, logger="training.train"):
            train_run(run)
        after = dict(run.net.named_parameters())
        unmoved[name] = [k for k in before if torch.equal(before[k], after[k].detach())]
    # the loss reaches the whole network: its first and last layers both moved
    for name, names in unmoved.items():
        assert not {"conv2d_1a.conv.weight", "last_linear.weight"} & set(names), (name, names)
    assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in losses.values())
    # each step reported once, in order (distillation reports a step after the next is queued)
    assert all(v == [(0, 1, 1), (0, 2, 2)] for v in steps.values()), steps
    # one line per epoch says what the progress bar said (logs without a terminal)
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1:")]
    assert [m.split(" (")[0] for m in summaries] == [
        f"epoch 1: loss {sum(v) / 2:.4f}" for v in losses.values()
    ]
    assert all("mean of 2 steps" in m and "images/s" in m for m in summaries)
    center = Checkpoint.load(tmp_path / "m" / "center" / "latest.pt")
    assert center.model["logits.weight"].shape == (IDENTITIES, 128)  # one class per identity
    assert center.extra["centers"].abs().sum() > 0  # the centers moved
    assert losses["distill"][0] > 0 and losses["distill-npz"][0] > 0  # not yet the teacher


def test_teacher_file_missing_images_is_an_error(aligned, tmp_path: Path) -> None:
    from training.data import DataError, load_dataset
    from training.teacher import load_teacher

    dataset = load_dataset(aligned[0])
    np.savez(tmp_path / "t.npz", paths=np.array(["nobody/0.png"]), embeddings=np.ones((1, 4)))
    with pytest.raises(DataError, match=r"t.npz: no teacher embedding for \d+ image"):
        load_teacher(tmp_path / "t.npz", dataset, aligned[0])
