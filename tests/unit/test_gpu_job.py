"""The GPU lease's scripts, training/gpu_job.sh and bench/gpu_check.sh, run here on copies of
themselves, with a stand-in for the device's python3: what a session planning its one
15-minute lease reads from `calls`, and what comes back from a device call (at most 8 files)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO

FILES = (
    "training/gpu_job.sh",
    "training/held_out.sh",
    "bench/gpu_check.sh",
    "configs/training/facenet_default_gpu.yaml",  # its time limit
    ".gitignore",
)

# the settings a session may have exported: none of them may leak into these runs
SETTINGS = [
    "BASE_TRAIN_ARGS",
    "TRAIN_ARGS",
    "TRAIN_S",
    "CALL_S",
    "BUDGET_LEFT_S",
    "SKIP_CHECK",
    "PRETRAINED",
    "PARTS",
    "PYTEST_S",
    "BENCH_S",
    "STREAMS_S",
    "BENCH_ARGS",
    "STREAMS_ARGS",
    "BENCH_DIR",
    "ALLOW_MISSING_PARTS",
    "OUT",
    "PY",
    "WORK",
    "SITE",
    "RECIPE",
]

# Stands for the device's python3: notes each command in calls.log and writes the files the
# real one would (a checkpoint, the exported model, the benchmarks' reports).
FAKE_PYTHON = """#!{python}
import sys
from pathlib import Path

args = sys.argv[1:]
with open(Path(__file__).with_name("calls.log"), "a") as log:
    log.write(" ".join(args) + "\\n")


def after(flag):
    return Path(args[args.index(flag) + 1])


if args[:3] == ["-m", "training.cli_facenet", "triplet"]:
    models = after("--models-base-dir") / "default"
    models.mkdir(parents=True, exist_ok=True)
    (models / "latest.pt").write_bytes(b"checkpoint")
elif args[:3] == ["-m", "training.cli_facenet", "export"]:
    out = after("--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"onnx" * 1000)
    out.with_suffix(".json").write_text("{{}}")
elif args[:2] == ["-m", "pytest"]:
    print("12 passed")
elif args[:1] == ["bench/bench_gpu.py"]:
    out = after("--out")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("bench_gpu.md", "bench_gpu.json", "profile_mtcnn.txt"):
        (out / name).write_text(name)
elif args[:1] == ["bench/bench_streams.py"]:
    after("--json").write_text("{{}}")
    after("--profile").write_text("profile")
"""

BENCH_FILES = {
    "bench.log",
    "bench_gpu.md",
    "bench_gpu.json",
    "profile_mtcnn.txt",
    "streams.log",
    "streams.json",
    "profile_streams.txt",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with the scripts, two packed parts of crops, .gpu_data/check and the
    stand-in python (repo/python)."""
    root = tmp_path / "repo"
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    parts = root / ".gpu_data" / "parts"
    parts.mkdir(parents=True)
    crop = tmp_path / "a.jpg"
    crop.write_bytes(b"jpeg")
    for n in (1, 2):
        with tarfile.open(parts / f"train.0{n}.tar", "w") as tar:
            tar.add(crop, arcname=f"crops/person{n}/a.jpg")
    (parts / "parts.txt").write_text("train.01.tar 1\ntrain.02.tar 1\n")
    (parts / "alignment.json").write_text("{}")
    for folder in ("whl", "data"):  # data: ../shared/data on the device
        (root / ".gpu_data" / "check" / folder).mkdir(parents=True)
    fake = root / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    # `timeout`, noting its limit and command in calls.log before it runs it
    (root / "bin").mkdir()
    (root / "bin" / "timeout").write_text(
        f'#!/bin/sh\necho "timeout $*" >> "{root}/calls.log"\nexec {shutil.which("timeout")} "$@"\n'
    )
    (root / "bin" / "timeout").chmod(0o755)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, timeout=60)
    return root


def run(
    root: Path, script: str, verb: str, **settings: str | Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env["PATH"] = f"{root / 'bin'}:{env['PATH']}"
    env.update({k: str(v) for k, v in settings.items()})
    return subprocess.run(
        ["bash", script, verb], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )


def device(
    root: Path, tmp_path: Path, script: str = "training/gpu_job.sh", **settings: str | Path
) -> Path:
    """`SCRIPT device` (gpu_job's, or gpu_check's) with the stand-in python; its $OUT."""
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        root,
        script,
        "device",
        OUT=out,
        PY=root / "python",
        WORK=tmp_path / "work",
        SITE=tmp_path / "site",
        **settings,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def device_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if "gpu_job.sh device" in line and "run(" in line]
    assert len(lines) == 1, stdout
    return lines[0]


def test_calls_print_the_rule_and_the_device_call_for_a_full_budget(repo: Path) -> None:
    result = run(repo, "training/gpu_job.sh", "calls")
    assert result.returncode == 0, result.stderr
    assert "read status" in result.stdout
    assert "timeout_s = min(600, B - 45), CALL_S = timeout_s - 20" in result.stdout
    assert "TRAIN_S = CALL_S - 150" in result.stdout
    line = device_line(result.stdout)
    assert 'command="CALL_S=580 TRAIN_S=430 bash training/gpu_job.sh device"' in line
    assert line.endswith("timeout_s=600)")
    assert '".gpu_data/check"' in line


@pytest.mark.parametrize(
    ("budget", "command", "timeout_s"),
    [
        ("600", "CALL_S=535 TRAIN_S=385 bash", 555),
        ("480", "CALL_S=415 TRAIN_S=265 bash", 435),
        ("450", "SKIP_CHECK=1 CALL_S=385 TRAIN_S=235 bash", 405),
    ],
)
def test_calls_size_the_device_call_to_the_device_time_left(
    repo: Path, budget: str, command: str, timeout_s: int
) -> None:
    line = device_line(run(repo, "training/gpu_job.sh", "calls", BUDGET_LEFT_S=budget).stdout)
    assert f'command="{command} training/gpu_job.sh device"' in line
    assert line.endswith(f"timeout_s={timeout_s})")
    # under 480 s the call goes to training and export: the GPU tests are not even carried
    assert ('".gpu_data/check"' in line) == (int(budget) >= 480)


@pytest.mark.parametrize("budget", ["274", "200", "44"])
def test_calls_with_too_little_time_left_say_give_back_not_a_call_that_cannot_train(
    repo: Path, budget: str
) -> None:
    """Under 275 s of device time the call would train under a minute, or not at all
    (TRAIN_S 0 is no limit to `timeout`, a negative one an error; timeout_s -1 no call)."""
    result = run(repo, "training/gpu_job.sh", "calls", BUDGET_LEFT_S=budget)
    assert result.returncode == 0, result.stderr
    assert "gpu_job.sh device" not in result.stdout
    assert f"B = {budget} s of device time left: under 275" in result.stdout
    assert "give_back now" in result.stdout


def test_calls_without_the_check_still_print_the_device_call_and_say_how_to_make_it(
    repo: Path,
) -> None:
    shutil.rmtree(repo / ".gpu_data" / "check")
    result = run(repo, "training/gpu_job.sh", "calls")
    assert result.returncode == 0, result.stderr
    line = device_line(result.stdout)
    assert ".gpu_data/check" not in line
    assert "no .gpu_data/check" in result.stdout
    assert "bash bench/gpu_check.sh prepare" in result.stdout


def triplet_command(root: Path) -> str:
    commands = (root / "calls.log").read_text().splitlines()
    return next(c for c in commands if c.startswith("-m training.cli_facenet triplet"))


def test_train_args_add_to_the_distillation_options(repo: Path, tmp_path: Path) -> None:
    device(repo, tmp_path, SKIP_CHECK="1", TRAIN_ARGS="--time-limit-min 4")
    command = triplet_command(repo)
    assert "--loss distill --teacher models/facenet/facenet.onnx --random-rotate 10" in command
    assert command.endswith("--time-limit-min 4")


def test_base_train_args_replace_the_distillation_options(repo: Path, tmp_path: Path) -> None:
    device(repo, tmp_path, SKIP_CHECK="1", BASE_TRAIN_ARGS="--loss distill --teacher t.npz")
    command = triplet_command(repo)
    assert command.endswith("--loss distill --teacher t.npz")
    assert "--random-rotate" not in command


def test_a_short_train_s_anneals_the_rate_within_it(repo: Path, tmp_path: Path) -> None:
    out = device(repo, tmp_path, SKIP_CHECK="1", CALL_S="415", TRAIN_S="265")
    assert triplet_command(repo).endswith("--time-limit-min 3.4")
    assert "TRAIN_S=265 s: training with --time-limit-min 3.4" in (out / "train.log").read_text()


def test_a_full_train_s_keeps_the_recipes_time_limit(repo: Path, tmp_path: Path) -> None:
    device(repo, tmp_path, SKIP_CHECK="1")
    assert "--time-limit-min" not in triplet_command(repo)


def limits(root: Path) -> dict[str, int]:
    """The time limit each python command ran under, by its module or script."""
    found = {}
    for line in (root / "calls.log").read_text().splitlines():
        if line.startswith("timeout "):
            _, limit, _, *words = line.split()
            found[words[1] if words[0] == "-m" else words[0]] = int(limit)
    return found


def test_a_shorter_call_stops_the_gpu_tests_and_the_benchmark_in_its_time(
    repo: Path, tmp_path: Path
) -> None:
    device(repo, tmp_path, CALL_S="415", TRAIN_S="265")
    ran = limits(repo)
    assert ran["training.cli_facenet"] == 265
    assert ran["pytest"] == 415 - 130  # beside the training, done before the export ends
    # what is left of CALL_S once the export is done (seconds here), less 10 s
    assert 415 - 40 <= ran["bench/bench_gpu.py"] <= 415 - 10


def test_the_device_call_returns_at_most_8_files_with_the_benchmark_in_one(
    repo: Path, tmp_path: Path
) -> None:
    out = device(repo, tmp_path)
    names = {p.name for p in out.iterdir()}
    assert len(names) <= 8, names
    assert {"train.log", "facenet.json", "env.txt", "pytest_gpu.log", "bench.tar"} <= names
    with tarfile.open(out / "bench.tar") as tar:
        inside = {Path(n).name for n in tar.getnames()}
    assert {"bench_gpu.json", "bench_gpu.md", "profile_mtcnn.txt", "bench.log"} <= inside


def test_device_keeps_gpu_checks_log_when_the_tests_never_ran(repo: Path, tmp_path: Path) -> None:
    (repo / "bench" / "gpu_check.sh").write_text(
        'echo "pydantic\'s wheels (Python 3.12) do not install here"; exit 1\n'
    )
    out = device(repo, tmp_path)
    assert "do not install here" in (out / "gpu_check.log").read_text()
    assert "see gpu_check.log" in (out / "train.log").read_text()


def test_gpu_check_alone_returns_at_most_8_files(repo: Path, tmp_path: Path) -> None:
    out = device(repo, tmp_path, "bench/gpu_check.sh", BENCH_DIR=tmp_path / "bench")
    assert {p.name for p in out.iterdir()} == {"env.txt", "pytest_gpu.log", "bench.tar"}
    with tarfile.open(out / "bench.tar") as tar:
        assert {Path(n).name for n in tar.getnames() if n != "."} == BENCH_FILES


def test_gpu_checks_call_leaves_time_beyond_its_parts() -> None:
    script = (REPO / "bench" / "gpu_check.sh").read_text()
    timeout_s = int(
        re.search(r'run\(command="bash bench/gpu_check.sh device".*timeout_s=(\d+)', script)[1]
    )
    parts = sum(
        int(re.search(rf"{name}:-(\d+)", script)[1])
        for name in ("PYTEST_S", "BENCH_S", "STREAMS_S")
    )
    # two pip installs and four probes that import torch come before the parts
    assert timeout_s - parts >= 30
