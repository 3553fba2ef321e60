"""Multi-process training helpers: the processes started, torchrun / DDP setup, batch-norm
sync, collectives.

Launched under ``torchrun``, or by ``launch_local`` (`train triplet --nproc-per-node N`), with
RANK, WORLD_SIZE and LOCAL_RANK in the environment, training runs one process per device:
gloo on CPU, nccl on CUDA. Batch norm statistics are computed over the whole global batch
(``torch.nn.SyncBatchNorm`` on CUDA; on CPU, where that class refuses to run,
``CpuSyncBatchNorm`` below), so N processes compute the same loss and gradients as one
process on the concatenated batch.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(gpu: str | None) -> torch.device:
    """``--gpu``: None/"" -> CUDA 0 if present else CPU; "cpu"; or a CUDA index."""
    if gpu is None or gpu == "":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if gpu.lower() == "cpu":
        return torch.device("cpu")
    if not gpu.isdigit():
        raise ValueError(f"--gpu {gpu}: expected a CUDA device index (0, 1, ...) or cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--gpu {gpu}: CUDA is not available on this machine (use --gpu cpu)")
    index = int(gpu)
    if not 0 <= index < torch.cuda.device_count():
        raise ValueError(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device("cuda", index)


def uses_cuda(gpu: str | None) -> bool:
    """Whether processes started by torchrun train on CUDA (one GPU each) with ``--gpu``."""
    return torch.cuda.is_available() and (gpu is None or gpu.lower() != "cpu")


def under_launcher() -> bool:
    """Whether this process is one that torchrun (or ``launch_local``) started."""
    return "WORLD_SIZE" in os.environ


def launch_local(command: list[str], nproc: int) -> int:
    """Run ``sys.executable *command`` in ``nproc`` processes on this machine, as torchrun
    does, but with a static rendezvous on 127.0.0.1 and a free port: torchrun's default one
    (and ``--standalone``'s) waits for ever where the host name does not resolve. Ctrl-C and
    SIGTERM reach every process (each in a session of its own) once, from here; the others
    are stopped when one fails. Returns 0, the exit status of the first process that failed,
    or 128 + the signal that stopped them."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _process_defaults(nproc)
    with socket.socket() as s:  # a free port for the rendezvous (rank 0's TCPStore)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"facewatch-{os.getpid()}",
        rdzv_backend="static",
        rdzv_endpoint=f"127.0.0.1:{port}",
        rdzv_configs={"rank": 0},
        local_addr="127.0.0.1",
        max_restarts=0,
    )
    logger.info("starting %d processes (rendezvous on 127.0.0.1:%d)", nproc, port)
    try:
        elastic_launch(config, sys.executable)(*command)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode if failure.exitcode >= 0 else 128 - failure.exitcode
        logger.error("process %d of %d failed (exit status %d); the others were stopped",
                     rank, nproc, code)  # fmt: skip
        return code
    except SignalException as exc:
        logger.warning("stopped by %s", signal.Signals(exc.sigval).name)
        return 128 + int(exc.sigval)
    return 0


def _process_defaults(nproc: int) -> None:
    """What each process inherits where the environment does not say: this machine's cores
    shared between them (torchrun gives each 1, and says so in a banner), and gloo on the
    loopback interface (all of them are on this machine; without it gloo warns, where the
    host name does not resolve, that it falls back to loopback). The launcher's own log
    keeps its errors (a process that failed), not its INFO and WARNING lines ("Received 2
    death signal, shutting down workers" at a Ctrl-C): ``launch_local`` says what they say."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (cores or 1) // nproc)))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for name in list(logging.root.manager.loggerDict):  # torch sets each one's own level
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.ERROR)
    logger.info("%s threads per process (OMP_NUM_THREADS)", threads)


def init_from_env(gpu: str | None = None) -> DistContext:
    """Join the process group when started by torchrun; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=pick_device(gpu))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = uses_cuda(gpu)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    logger.info("process %d of %d on %s", rank, world, device)
    if rank:  # the first process says the rest, once (the same checks, epochs and figures)
        for handler in logging.getLogger().handlers:
            handler.addFilter(_only_errors_and_where)
    return DistContext(rank, world, device)


def _only_errors_and_where(record: logging.LogRecord) -> bool:
    """What the processes after the first log: their errors, and this module's lines."""
    return record.levelno >= logging.ERROR or record.name == __name__


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _SumAcrossProcesses(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all_reduce(SUM) of the incoming gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics cover the batches of all processes.

    Works for 2-D (N, C) and 4-D (N, C, H, W) inputs on any device; the sums are combined
    with a differentiable all-reduce, so gradients match one process on the whole batch.
    Outside training or without a process group it is plain batch norm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected 2-D or 4-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=dims), (x * x).sum(dim=dims), count])
        stats = _SumAcrossProcesses.apply(stats)  # type: ignore[no-untyped-call]  # torch's, untyped
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels : 2 * channels] / total - mean * mean
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        out = out * self.weight.view(shape) + self.bias.view(shape)
        self._update_running(mean.detach(), var.detach(), float(total.detach()))
        return out

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, total: float) -> None:
        if not self.track_running_stats or self.running_mean is None or self.running_var is None:
            return
        unbiased = var * total / max(total - 1.0, 1.0)
        momentum = 0.1 if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every batch norm layer synchronise its statistics across processes.

    Parameter and buffer names are unchanged (state dicts stay loadable).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.__class__ = CpuSyncBatchNorm
    return model


def all_gather_rows(x: torch.Tensor, ctx: DistContext, total: int) -> torch.Tensor:
    """Concatenate the equal-sized row blocks of all processes and keep the first ``total``."""
    if not ctx.enabled:
        return x[:total]
    parts = [torch.empty_like(x) for _ in range(ctx.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)[:total]


def mean_across(value: float, ctx: DistContext) -> float:
    """The mean of a number over all processes."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's ``obj`` on every process."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_rows(n: int, ctx: DistContext) -> tuple[np.ndarray, int]:
    """This process's share of ``n`` rows (strided), padded so all shares are equally long.

    Returns (row indices, padded share length); padding repeats the share's last row.
    """
    per = -(-n // ctx.world)
    own = np.arange(ctx.rank, n, ctx.world)
    if len(own) == 0:
        own = np.array([n - 1])
    pad = np.full(per - len(own), own[-1])
    return np.concatenate([own, pad]).astype(np.int64), per


def unshard_rows(gathered: torch.Tensor, n: int, ctx: DistContext) -> torch.Tensor:
    """Undo ``shard_rows``'s strided order after ``all_gather_rows``."""
    if not ctx.enabled:
        return gathered[:n]
    per = gathered.shape[0] // ctx.world
    order = torch.empty(n, dtype=torch.long)
    for rank in range(ctx.world):
        rows = torch.arange(rank, n, ctx.world)
        order[rows] = rank * per + torch.arange(len(rows))
    return gathered[order.to(gathered.device)]


__all__ = [
    "CpuSyncBatchNorm",
    "DistContext",
    "all_gather_rows",
    "broadcast_object",
    "convert_sync_batchnorm",
    "init_from_env",
    "launch_local",
    "mean_across",
    "shard_rows",
    "shutdown",
    "under_launcher",
    "unshard_rows",
    "uses_cuda",
]
