"""Two CPU processes (gloo, DDP) train a triplet batch exactly as one process does."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.multiprocessing as mp  # noqa: E402

from tests.face_folders import celeba_people, needs_celeba  # noqa: E402
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


@pytest.mark.slow
@needs_celeba
def test_the_documented_torchrun_command_trains_with_two_processes(tmp_path) -> None:
    """README's multi-GPU launch, `torchrun --nproc-per-node N -m training.cli_facenet
    triplet ...`, here with 2 CPU processes (gloo): both join and the run saves its
    checkpoint."""
    try:
        socket.getaddrinfo(socket.gethostname(), None)
    except OSError as exc:
        pytest.skip(f"torchrun waits for ever where the host name does not resolve ({exc})")
    data = celeba_people(tmp_path / "people", [4, 4, 4, 4])
    recipe = Path(__file__).resolve().parents[2] / "configs" / "training" / "facenet_smoke_cpu.yaml"
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "-m", "training.cli_facenet", "triplet",
         "--config", str(recipe), "--data-dir", str(data), "--max-nrof-epochs", "1",
         "--models-base-dir", str(tmp_path / "models"), "--logs-base-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        assert f"process {rank} of 2 on cpu" in done.stderr, done.stderr[-3000:]
    assert (tmp_path / "models" / "smoke" / "latest.pt").is_file()
