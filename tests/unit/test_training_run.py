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
from training.run_setup import build_run  # noqa: E402
from training.train import checkpoint_of  # noqa: E402
from training.train_options import OptionError, build_parser  # noqa: E402

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


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch) -> None:
    """The default --logs-base-dir and --models-base-dir (~/...) land under tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def build():
    """``build_run`` whose event writers are closed after the test."""
    runs = []

    def build_closed(args):
        runs.append(build_run(args, init_from_env("cpu")))
        return runs[-1]

    yield build_closed
    for run in runs:
        if run.writer is not None:
            run.writer.close()


def test_a_run_saved_with_adam_resumes_with_the_recipes_adam_torch(caplog) -> None:
    """The recipes now name torch's Adam ADAM_TORCH, which runs saved before trained with
    as ADAM: the same optimiser state, so their --resume goes on, with a warning (it was
    refused: the optimizer is kept for life). Another optimiser is still refused."""
    from training.checkpoint import adopt_run_options
    from training.train_options import options_dict

    saved = options_dict(_args("--data-dir", "d", "--optimizer", "ADAM"))
    again = _args("--data-dir", "d", "--optimizer", "ADAM_TORCH", "--resume", "x")
    with caplog.at_level(logging.WARNING):
        adopt_run_options(again, saved, Path("x/latest.pt"))
    assert again.optimizer == "ADAM_TORCH"
    assert [r.getMessage() for r in caplog.records] == [
        "resuming with --optimizer ADAM_TORCH; the run had ADAM"
    ]
    other = _args("--data-dir", "d", "--optimizer", "RMSPROP", "--resume", "x")
    with pytest.raises(OptionError, match=r"--optimizer RMSPROP \(the run has ADAM\)"):
        adopt_run_options(other, saved, Path("x/latest.pt"))


@needs_celeba
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


@needs_celeba
def test_a_margin_other_than_the_crops_is_a_warning(tmp_path: Path, caplog, build) -> None:
    data = celeba_people(tmp_path / "data", [3, 3])
    (data / "alignment.json").write_text(
        json.dumps({"image_size": 96, "margin": 16, "alignment": "margin"})
    )
    base = ["--data-dir", str(data), "--models-base-dir", str(tmp_path / "m"),
            "--logs-base-dir", str(tmp_path / "l")]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        run = build(_args(*base, "--margin", "32"))
    warned = [r.getMessage() for r in caplog.records if "--margin 32" in r.getMessage()]
    assert len(warned) == 1 and "alignment.json says 16): using 16" in warned[0], warned
    assert run.args.margin == 16 and checkpoint_of(run).extra["margin"] == 16
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # not given: the crops' margin, nothing to say
        assert build(_args(*base)).args.margin == 16
    assert not [r for r in caplog.records if "differs from the margin" in r.getMessage()]


def _start(tmp_path: Path, monkeypatch) -> Path:
    """A run started with relative paths from tmp_path/start; returns its directory."""
    start = tmp_path / "start"
    celeba_people(start / "aligned", [3, 3])
    monkeypatch.chdir(start)
    argv = ["--data-dir", "aligned", "--models-base-dir", "models", "--logs-base-dir", "logs"]
    run = build_run(_args(*argv, "--run-name", "r"), init_from_env("cpu"))
    if run.writer is not None:
        run.writer.close()
    run.epoch = 1
    save_epoch(checkpoint_of(run), run.model_dir)
    return run.model_dir


def _log_dir(run) -> Path | None:
    return None if run.writer is None else Path(run.writer.log_dir)


@needs_celeba
def test_resume_with_the_same_relative_paths_warns_of_nothing(
    tmp_path: Path, monkeypatch, caplog, build
) -> None:
    run_dir = _start(tmp_path, monkeypatch)  # saved absolute
    same = ["--data-dir", "aligned", "--models-base-dir", "models", "--logs-base-dir", "logs"]
    with caplog.at_level(logging.WARNING):
        run = build(_args(*same, "--run-name", "r", "--resume", "models/r"))
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in said if not m.startswith(f"--data-dir {run.args.data_dir}")], said
    # (the CelebA photos that stand in for crops here are said to look like photos, rightly)
    assert run.args.data_dir == tmp_path / "start" / "aligned" and run.model_dir == run_dir


def test_resume_compares_path_options_as_absolute_paths(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    from training.checkpoint import adopt_run_options
    from training.run_checks import PATH_OPTIONS, absolute_paths
    from training.train_options import apply_config, options_dict

    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text("teacher: t/teacher.npz\n")
    argv = ["--config", "recipe.yaml", "--data-dir", "d", "--lfw-dir", "lfw",
            "--lfw-pairs", "../p.txt", "--learning-rate-schedule-file", "s.txt",
            "--pretrained-model", "p.pt", "--models-base-dir", "~/m", "--logs-base-dir", "l"]  # fmt: skip
    parser = build_parser()
    first = parser.parse_args(argv)
    apply_config(first, parser)
    absolute_paths(first)
    saved = options_dict(first)
    assert all(Path(saved[name]).is_absolute() for name in PATH_OPTIONS)
    again = parser.parse_args([*argv, "--resume", "x"])
    apply_config(again, parser)
    with caplog.at_level(logging.WARNING):
        adopt_run_options(again, saved, Path("x/latest.pt"))
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    moved = parser.parse_args(["--data-dir", "other", "--resume", "x"])
    with caplog.at_level(logging.WARNING):
        adopt_run_options(moved, saved, Path("x/latest.pt"))
    assert [r.getMessage() for r in caplog.records] == [
        f"resuming with --data-dir other; the run had {tmp_path / 'd'}"
    ]


@needs_celeba
def test_resume_from_another_directory_uses_the_runs_own_folders(
    tmp_path: Path, monkeypatch, build
) -> None:
    run_dir = _start(tmp_path, monkeypatch)
    start = tmp_path / "start"
    options = Checkpoint.load(run_dir / "latest.pt").options
    assert options["data_dir"] == str(start / "aligned")  # saved absolute
    assert options["logs_base_dir"] == str(start / "logs")
    elsewhere = tmp_path / "elsewhere"
    celeba_people(elsewhere / "aligned", [3, 3, 3])  # another dataset of the same name
    monkeypatch.chdir(elsewhere)
    run = build(_args("--resume", str(run_dir)))
    assert run.args.data_dir == start / "aligned" and len(run.dataset) == 2
    assert run.model_dir == run_dir and run.epoch == 1


@needs_celeba
def test_a_damaged_latest_checkpoint_names_the_newest_that_reads(
    tmp_path: Path, monkeypatch, build
) -> None:
    """latest.pt cut short (a power cut, a full disk): epoch 2's file is the same file (a
    link), so --resume is pointed at epoch 1's, the newest that reads."""
    from training.facenet_nets import ModelFileError

    run_dir = _start(tmp_path, monkeypatch)  # epoch 1
    second = Checkpoint.load(run_dir / "latest.pt")
    second.epoch = 2
    save_epoch(second, run_dir)
    latest = run_dir / "latest.pt"
    os.truncate(latest, latest.stat().st_size // 2)
    with pytest.raises(ModelFileError) as damaged:
        build(_args("--resume", str(run_dir)))
    assert str(damaged.value).endswith(
        f"; the newest that reads: --resume {run_dir / 'epoch-0001.pt'}"
    )
    run = build(_args("--resume", str(run_dir / "epoch-0001.pt")))
    assert run.epoch == 1


def _as_older_facewatch_saved_it(run_dir: Path, models: str = "models") -> None:
    old = Checkpoint.load(run_dir / "latest.pt")
    old.options.update(data_dir="aligned", logs_base_dir="logs", models_base_dir=models)
    old.save(run_dir / "latest.pt")


@needs_celeba
def test_resume_of_a_run_saved_with_relative_paths(
    tmp_path: Path, monkeypatch, caplog, build
) -> None:
    run_dir = _start(tmp_path, monkeypatch)
    _as_older_facewatch_saved_it(run_dir)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError) as refused:
        build(_args("--resume", str(run_dir)))
    message = str(refused.value)
    assert "relative paths (data_dir 'aligned'), relative to the directory" in message
    assert "resume from there, or give them again (--data-dir PATH)" in message
    again = ["--data-dir", "start/aligned"]  # given: from here; the event logs are not needed
    with caplog.at_level(logging.WARNING):
        run = build(_args("--resume", str(run_dir), *again))
    assert run.args.data_dir == tmp_path / "start" / "aligned"
    assert run.args.models_base_dir == tmp_path / "start" / "models"  # the run's parent
    # saved models base 'models', the run in start/models: it was started in start/
    assert _log_dir(run) == tmp_path / "start" / "logs" / "r"
    assert "event logs go to" in caplog.text
    _as_older_facewatch_saved_it(run_dir, models="elsewhere/models")  # no telling where
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run = build(_args("--resume", str(run_dir), *again))
    assert _log_dir(run) is None and "no event logs for this run" in caplog.text


@needs_celeba
def test_resume_of_a_relative_run_from_where_it_was_started(
    tmp_path: Path, monkeypatch, caplog, build
) -> None:
    run_dir = _start(tmp_path, monkeypatch)  # the current directory stays tmp_path/start
    _as_older_facewatch_saved_it(run_dir)
    with caplog.at_level(logging.INFO, logger="training.run_checks"):
        run = build(_args("--resume", "models/r"))
    assert "resumed from the directory it was started in" in caplog.text
    start = tmp_path / "start"
    assert run.args.data_dir == start / "aligned" and _log_dir(run) == start / "logs" / "r"
    assert run.model_dir == run_dir and run.epoch == 1
    monkeypatch.chdir(tmp_path)  # elsewhere: refused
    with pytest.raises(OptionError, match="relative paths"):
        build(_args("--resume", str(run_dir)))


@needs_celeba
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


@needs_celeba
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
    # with the options the checkpoint does not keep (local to this machine)
    assert (
        f"continue with: facewatch train triplet --resume {run_dir} --gpu cpu --workers 0\n" in err
    )


@needs_celeba
def test_per_epoch_lfw_takes_the_files_folds_and_refuses_one_kind_folds(
    tmp_path: Path, build
) -> None:
    from tests.face_folders import SHARED, lfw_pairs
    from training.data import DataError

    data = celeba_people(tmp_path / "data", [3, 3])
    lfw = ["--lfw-dir", str(SHARED / "lfw" / "images"), "--data-dir", str(data)]
    unsorted = lfw_pairs(tmp_path / "unsorted.txt", "2\t5", by_fold=False)
    with pytest.raises(DataError, match=r"unsorted.txt: fold 1 of 2 \(pairs 1-10\) holds only"):
        build(_args(*lfw, "--lfw-pairs", str(unsorted)))
    pairs = lfw_pairs(tmp_path / "pairs.txt", "2\t5")
    run = build(_args(*lfw, "--lfw-pairs", str(pairs)))
    lfw_figures = train_module._evaluate_lfw(run)
    assert lfw_figures is not None and len(lfw_figures["fold_accuracies"]) == 2
    # each evaluation appends "step<TAB>accuracy<TAB>VAL" to the run's log folder's
    # lfw_result.txt, as the original's did (there was none)
    run.step = 7
    train_module._evaluate_lfw(run)
    lines = (run.log_dir / "lfw_result.txt").read_text().splitlines()
    accuracy, val = lfw_figures["accuracy_mean"], lfw_figures["val_mean"]
    assert lines == [f"0\t{accuracy:.5f}\t{val:.5f}", f"7\t{accuracy:.5f}\t{val:.5f}"]
    assert run.log_dir == tmp_path / "home" / "logs" / "facenet" / run.model_dir.name


def test_the_epoch_lines_rate_keeps_its_digits_when_slow() -> None:
    """A CPU run's 0.43 images/s was logged as "~0 images/s"."""
    assert train_module.rate_text(0.43) == "0.43"
    assert train_module.rate_text(2.5) == "2.5"
    assert train_module.rate_text(16600.4) == "16600"
