"""What `facewatch train triplet` checks and says around a run: the identities a loss needs,
the crops' margin, paths saved for --resume, a resume with nothing to do, Ctrl-C."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import training.train as train_module  # noqa: E402
from tests.face_folders import celeba_people, needs_celeba  # noqa: E402
from training.checkpoint import Checkpoint, save_epoch  # noqa: E402
from training.cli_facenet import main as cli  # noqa: E402
from training.distributed import init_from_env  # noqa: E402
from training.train import build_run, checkpoint_of  # noqa: E402
from training.train_options import OptionError, build_parser  # noqa: E402

pytestmark = needs_celeba
SMALL = ["--image-size", "80", "--embedding-size", "16", "--gpu", "cpu", "--workers", "0",
         "--batch-size", "6", "--people-per-batch", "2", "--images-per-person", "3",
         "--epoch-size", "1", "--max-nrof-epochs", "2", "--moving-average-decay", "0",
         "--keep-checkpoints", "0"]  # fmt: skip


def _interrupted_cli(argv: list[str]) -> int:
    try:
        return cli(argv)
    except KeyboardInterrupt:  # would stop pytest itself
        pytest.fail("Ctrl-C came out of the command as a bare KeyboardInterrupt")


def _args(*argv: str):
    return build_parser().parse_args([*SMALL, *argv])


@pytest.fixture(autouse=True)
def _plain_cpu_kernels():
    """oneDNN compiles kernels per shape (slow on 2 cores); the plain ones give the same."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = before


def test_a_loss_that_needs_two_identities_is_refused_before_training(
    tmp_path: Path, capsys
) -> None:
    one = celeba_people(tmp_path / "one", [6])
    models = tmp_path / "models"
    for loss in ("triplet", "center"):
        argv = ["triplet", "--data-dir", str(one), "--models-base-dir", str(models), *SMALL]
        assert cli([*argv, "--loss", loss, "--run-name", loss]) == 2
        err = capsys.readouterr().err
        assert f"--loss {loss} needs at least 2 identities" in err, err
        assert f"{one} has 1 (" in err
    assert not models.exists()  # no empty run directory left behind


def test_a_margin_other_than_the_crops_is_a_warning(tmp_path: Path, caplog) -> None:
    data = celeba_people(tmp_path / "data", [3, 3])
    (data / "alignment.json").write_text(
        json.dumps({"image_size": 96, "margin": 16, "alignment": "margin"})
    )
    base = ["--data-dir", str(data), "--models-base-dir", str(tmp_path / "m")]
    with caplog.at_level(logging.WARNING):
        run = build_run(_args(*base, "--margin", "32"), init_from_env("cpu"))
    warned = [r.getMessage() for r in caplog.records if "--margin 32" in r.getMessage()]
    assert len(warned) == 1 and "alignment.json says 16): using 16" in warned[0], warned
    assert run.args.margin == 16 and checkpoint_of(run).extra["margin"] == 16
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # not given: the crops' margin, nothing to say
        assert build_run(_args(*base), init_from_env("cpu")).args.margin == 16
    assert not [r for r in caplog.records if "margin" in r.getMessage()]


def _start(tmp_path: Path, monkeypatch) -> Path:
    """A run started with relative paths from tmp_path/start; returns its directory."""
    start = tmp_path / "start"
    celeba_people(start / "aligned", [3, 3])
    monkeypatch.chdir(start)
    argv = ["--data-dir", "aligned", "--models-base-dir", "models", "--logs-base-dir", "logs"]
    run = build_run(_args(*argv, "--run-name", "r"), init_from_env("cpu"))
    run.epoch = 1
    save_epoch(checkpoint_of(run), run.model_dir)
    return run.model_dir


def test_resume_from_another_directory_uses_the_runs_own_folders(
    tmp_path: Path, monkeypatch
) -> None:
    run_dir = _start(tmp_path, monkeypatch)
    start = tmp_path / "start"
    options = Checkpoint.load(run_dir / "latest.pt").options
    assert options["data_dir"] == str(start / "aligned")  # saved absolute
    assert options["logs_base_dir"] == str(start / "logs")
    elsewhere = tmp_path / "elsewhere"
    celeba_people(elsewhere / "aligned", [3, 3, 3])  # another dataset of the same name
    monkeypatch.chdir(elsewhere)
    run = build_run(_args("--resume", str(run_dir)), init_from_env("cpu"))
    assert run.args.data_dir == start / "aligned" and len(run.dataset) == 2
    assert run.model_dir == run_dir and run.epoch == 1


def test_resume_of_a_run_saved_with_relative_paths(tmp_path: Path, monkeypatch) -> None:
    run_dir = _start(tmp_path, monkeypatch)
    old = Checkpoint.load(run_dir / "latest.pt")  # as an older facewatch saved it
    old.options.update(data_dir="aligned", logs_base_dir="logs", models_base_dir="models")
    old.save(run_dir / "latest.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError) as refused:
        build_run(_args("--resume", str(run_dir)), init_from_env("cpu"))
    message = str(refused.value)
    assert "relative paths (data_dir 'aligned', logs_base_dir 'logs')" in message
    assert "--data-dir PATH --logs-base-dir PATH" in message
    again = ["--data-dir", "start/aligned", "--logs-base-dir", "start/logs"]  # given: from here
    run = build_run(_args("--resume", str(run_dir), *again), init_from_env("cpu"))
    assert run.args.data_dir == tmp_path / "start" / "aligned"
    assert run.args.models_base_dir == tmp_path / "start" / "models"  # the run's parent


def test_a_resume_with_nothing_to_do_says_so(tmp_path: Path, monkeypatch, capsys) -> None:
    run_dir = _start(tmp_path, monkeypatch)
    ckpt = Checkpoint.load(run_dir / "latest.pt")
    ckpt.epoch = 2
    ckpt.save(run_dir / "latest.pt")
    assert cli(["triplet", "--resume", str(run_dir), "--gpu", "cpu", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert f"nothing to do: run {run_dir} already trained 2 epochs" in err
    assert "raise --max-nrof-epochs" in err


def test_loader_workers_default_to_the_cpus_there_are(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert build_parser().parse_args([]).workers == 2  # a 2-core machine: not 4 workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert build_parser().parse_args([]).workers == 4


def test_ctrl_c_says_where_training_stopped_and_how_to_go_on(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    data = celeba_people(tmp_path / "data", [3, 3])
    real = train_module.EPOCHS["center"]

    def interrupted_at(epoch: int):
        def epoch_fn(run, bar) -> None:
            if run.epoch == epoch:
                raise KeyboardInterrupt
            real(run, bar)

        return epoch_fn

    argv = ["triplet", "--data-dir", str(data), "--models-base-dir", str(tmp_path / "m"),
            "--logs-base-dir", str(tmp_path / "l"), *SMALL, "--loss", "center",
            "--max-nrof-epochs", "3"]  # fmt: skip
    monkeypatch.setitem(train_module.EPOCHS, "center", interrupted_at(0))
    assert _interrupted_cli([*argv, "--run-name", "first"]) == 130
    err = capsys.readouterr().err
    assert "epoch 1 of 3 interrupted (step 0); no checkpoint saved" in err, err
    assert not (tmp_path / "m" / "first").exists()
    monkeypatch.setitem(train_module.EPOCHS, "center", interrupted_at(1))
    assert _interrupted_cli([*argv, "--run-name", "second"]) == 130
    run_dir = tmp_path / "m" / "second"
    err = capsys.readouterr().err
    assert (
        f"epoch 2 of 3 interrupted (step 1); last checkpoint: {run_dir}/latest.pt (epoch 1)" in err
    )
    assert f"continue with: facewatch train triplet --resume {run_dir}" in err


def test_per_epoch_lfw_takes_the_files_folds_and_refuses_one_kind_folds(tmp_path: Path) -> None:
    from tests.face_folders import SHARED, lfw_pairs
    from training.data import DataError

    data = celeba_people(tmp_path / "data", [3, 3])
    lfw = ["--lfw-dir", str(SHARED / "lfw" / "images"), "--data-dir", str(data)]
    unsorted = lfw_pairs(tmp_path / "unsorted.txt", "2\t10", by_fold=False)
    with pytest.raises(DataError, match=r"unsorted.txt: fold 1 of 2 \(pairs 1-10\) holds only"):
        build_run(_args(*lfw, "--lfw-pairs", str(unsorted)), init_from_env("cpu"))
    pairs = lfw_pairs(tmp_path / "pairs.txt", "2\t5")
    run = build_run(_args(*lfw, "--lfw-pairs", str(pairs)), init_from_env("cpu"))
    lfw_figures = train_module._evaluate_lfw(run)
    assert lfw_figures is not None and len(lfw_figures["fold_accuracies"]) == 2
