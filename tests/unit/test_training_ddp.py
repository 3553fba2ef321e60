"""Two CPU processes (gloo, DDP) train a triplet batch exactly as one process does."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.multiprocessing as mp  # noqa: E402

from tests.face_folders import celeba_people, needs_celeba  # noqa: E402
from training.cli_facenet import main as cli  # noqa: E402
from training.distributed import DistContext, convert_sync_batchnorm  # noqa: E402
from training.facenet_nets import build_model  # noqa: E402
from training.run_setup import make_optimizer  # noqa: E402
from training.train_loops import FeaturesHead, Run, triplet_step  # noqa: E402

TRIPLETS = 4
SIZE = 80


def _batch() -> torch.Tensor:
    """TRIPLETS triplets, rows (a0, p0, n0, a1, ...), fixed content, uint8 as the loader's."""
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (TRIPLETS * 3, 3, SIZE, SIZE), generator=gen, dtype=torch.uint8)


def _one_step(ctx: DistContext, images: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = build_model(embedding_size=16)
    model: torch.nn.Module = FeaturesHead(net)
    if ctx.enabled:
        convert_sync_batchnorm(net, ctx.device)
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = make_optimizer("MOM", net, lr=0.5, weight_decay=0.0)
    args = argparse.Namespace(alpha=0.5, standardization="fixed")
    run = Run(args, ctx, [], net, model, optimizer, None, Path("."))
    loss = triplet_step(run, images)
    return (
        loss,
        net.last_linear.weight.detach().clone(),
        net.conv2d_1a.bn.running_mean.detach().clone(),
    )


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = _batch().view(TRIPLETS, 3, 3, SIZE, SIZE)[rank::world].reshape(-1, 3, SIZE, SIZE)
        loss, weight, running = _one_step(DistContext(rank, world), rows)
        torch.save(
            {"loss": loss, "weight": weight, "running": running}, Path(out_dir) / f"rank{rank}.pt"
        )
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.backends.mkldnn.enabled = False
    loss, weight, running = _one_step(DistContext(), _batch())
    torch.manual_seed(0)
    initial = build_model(embedding_size=16).last_linear.weight.detach()
    step = (weight - initial).norm()
    assert loss > 0.05 and step > 1e-3  # a real loss and a real update
    for r in ranks:
        assert r["loss"] == pytest.approx(loss, rel=1e-4)  # the mean over all 4 triplets
        assert (r["weight"] - weight).norm() < 1e-3 * step  # the same gradient step
        assert torch.allclose(r["running"], running, atol=1e-5)  # batch norm saw the whole batch
    # and the check can fail: training on half the batch gives another step
    half = _one_step(DistContext(), _batch()[:6])[1]
    assert (half - weight).norm() > 0.05 * step


def _launched(monkeypatch, argv: list[str]) -> list[list[str]]:
    """The commands that `triplet ARGV` asks launch_local to start (nothing is started)."""
    import training.distributed

    started: list[list[str]] = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(training.distributed, "launch_local", lambda c, n: started.append(c) or 0)
    assert cli(["triplet", *argv]) == 0
    return started


def test_nproc_per_node_gives_each_process_the_command_without_it(monkeypatch, caplog) -> None:
    """--nproc-per-node 2: the processes run the same triplet command (its options under
    their full names), without --nproc-per-node, at the launcher's log level."""
    from training.train_options import build_parser

    caplog.set_level(logging.DEBUG)  # as `facewatch --log-level DEBUG train triplet ...`

    given = ["--data-dir", "faces", "--nproc-per", "2", "--learning-rate", "1e-5", "--random-crop",
             "--no-random-flip", "--gpu", "cpu", "--max_nrof_epochs", "3"]  # fmt: skip
    [command] = _launched(monkeypatch, given)
    assert command[:6] == ["-u", "-m", "training.cli_facenet", "--log-level", "DEBUG", "triplet"]
    child = command[6:]
    assert "--nproc-per-node" not in child and "--nproc_per_node" not in child
    assert child == ["--data-dir", "faces", "--learning-rate", "1e-05", "--random-crop",
                     "--no-random-flip", "--gpu", "cpu", "--max_nrof_epochs", "3"]  # fmt: skip
    ours, theirs = build_parser().parse_args(given), build_parser().parse_args(child)
    assert {k for k, v in vars(ours).items() if getattr(theirs, k, v) != v} == {
        "nproc_per_node", "_given", "_given_as"}  # fmt: skip
    assert theirs.nproc_per_node == 1
    # one process, or already one of torchrun's: trained here, nothing launched
    import training.train

    monkeypatch.setattr(training.train, "train", lambda args: Path("run"))
    assert _launched(monkeypatch, ["--data-dir", "faces"]) == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(training.distributed, "launch_local", lambda c, n: 1 / 0)
    assert cli(["triplet", "--data-dir", "faces", "--nproc-per-node", "2"]) == 0


def test_nproc_per_node_out_of_range_is_a_clear_error(monkeypatch, capsys) -> None:
    import training.distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(training.distributed, "launch_local", lambda c, n: 1 / 0)
    with pytest.raises(SystemExit) as done:
        cli(["triplet", "--nproc-per-node", "0"])
    assert done.value.code == 2
    assert "argument --nproc-per-node/--nproc_per_node: 0: must be >= 1" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli(["triplet", "--nproc-per-node", "2"]) == 2
    assert capsys.readouterr().err == (
        "error: --nproc-per-node 2: one process per CUDA device, and only 1 are present "
        "(--gpu cpu trains on the CPU)\n"
    )
    # a GPU index would be ignored (each process takes its own): said, not ignored
    assert cli(["triplet", "--nproc-per-node", "2", "--gpu", "1"]) == 2
    assert capsys.readouterr().err == (
        "error: --gpu 1 with --nproc-per-node 2: each process takes a GPU of its own, 0 to N-1 "
        "(CUDA_VISIBLE_DEVICES=1,2 chooses which)\n"
    )
    # an option the processes would each refuse is refused once, before they start
    assert cli(["triplet", "--nproc-per-node", "2", "--gpu", "cpu", "--batch-size", "10"]) == 2
    assert "--batch-size 10: must be a multiple of 3" in capsys.readouterr().err


def test_a_process_of_several_says_to_resume_with_as_many(monkeypatch, tmp_path) -> None:
    """Ctrl-C's "continue with:" line, printed by the first of --nproc-per-node's processes,
    starts as many again; on several machines (torchrun's nodes) it does not guess."""
    from training.checkpoint import resume_command
    from training.train_options import build_parser

    args = build_parser().parse_args(["--data-dir", "faces", "--gpu", "cpu"])
    resume = f"facewatch train triplet --resume {tmp_path} --gpu cpu"
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert resume_command(args, tmp_path) == resume
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resume_command(args, tmp_path) == f"{resume} --nproc-per-node 4"
    monkeypatch.setenv("WORLD_SIZE", "8")  # two machines of 4
    assert resume_command(args, tmp_path) == resume


def _can_rename_host() -> str | None:
    """Why a test cannot give its command a host name of its own (None: it can)."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    done = subprocess.run(["unshare", "--uts", "hostname", "x.invalid"], capture_output=True)
    if done.returncode:
        return f"unshare --uts is not permitted here: {done.stderr.decode().strip()}"
    return None


@pytest.mark.slow
@needs_celeba
@pytest.mark.parametrize("host", ["this machine's", "unresolvable"])
def test_the_documented_command_trains_with_two_processes(tmp_path, host: str) -> None:
    """README's multi-GPU launch, `triplet --nproc-per-node N`, here with 2 CPU processes
    (gloo): both join and the run saves its checkpoint; also where the host name does not
    resolve (a minimal container's), where torchrun's own rendezvous waits for ever."""
    prefix: list[str] = []
    if host == "unresolvable":
        if (why := _can_rename_host()) is not None:
            pytest.skip(why)
        prefix = ["unshare", "--uts", "sh", "-c", 'hostname no-such-host.invalid && exec "$@"', "-"]
    data = celeba_people(tmp_path / "people", [4, 4, 4, 4])
    recipe = Path(__file__).resolve().parents[2] / "configs" / "training" / "facenet_smoke_cpu.yaml"
    facewatch = Path(sys.executable).with_name("facewatch")
    command = [*prefix, str(facewatch), "train", "triplet", "--nproc-per-node", "2", "--config", str(recipe), "--data-dir", str(data),
               "--max-nrof-epochs", "1", "--epoch-size", "1",
               "--models-base-dir", str(tmp_path / "models"),
               "--logs-base-dir", str(tmp_path / "logs")]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            _, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            p.terminate()  # the launcher stops its processes
            _, err = p.communicate(timeout=60)
            pytest.fail(f"still running after 4 minutes:\n{err[-3000:]}")
    assert p.returncode == 0, err[-3000:]
    for rank in (0, 1):
        assert f"process {rank} of 2 on cpu" in err, err[-3000:]
    assert (tmp_path / "models" / "smoke" / "latest.pt").is_file()
    assert err.count("has no alignment.json") == 1, err[-3000:]  # a check's warning: once
    assert "OMP_NUM_THREADS environment variable" not in err  # torchrun's banner
    assert "loopback" not in err  # gloo's fallback, where the host name does not resolve
