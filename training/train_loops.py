"""One epoch of each loss: triplet (online selection), softmax + center, distillation.

``Run`` holds the state that lives across epochs; train.py builds it. Every process of a
distributed run makes the same random choices (seeded by seed and epoch) and then takes
its own share of each global batch, so N processes train on what one process would.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import WeightAverage
from training.data import (
    Augment,
    BatchPlan,
    FaceImages,
    ImageClass,
    flatten,
    standardize_batch,
    warp_batch,
)
from training.distributed import (
    DistContext,
    all_gather_rows,
    mean_across,
    shard_rows,
    unshard_rows,
)
from training.losses import CenterLoss, distillation_loss, softmax_center_loss, triplet_loss_stacked
from training.schedule import learning_rate
from training.triplet import sample_people, select_triplets

logger = logging.getLogger(__name__)

StepHook = Callable[[int, int, int, float], None]  # (epoch, batch in epoch, global step, loss)
MAX_EMPTY_ROUNDS = 20


class FeaturesHead(nn.Module):
    """What the optimiser trains: returns (unnormalised embedding, logits or None)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.net.features(x)
        logits = self.net.logits(features) if hasattr(self.net, "logits") else None
        return features, logits


@dataclass
class Run:
    args: argparse.Namespace
    ctx: DistContext
    dataset: list[ImageClass]
    net: nn.Module  # the bare network (state dicts, evaluation)
    model: nn.Module  # FeaturesHead, wrapped in DDP when distributed
    optimizer: torch.optim.Optimizer
    average: WeightAverage | None
    model_dir: Path
    scaler: torch.amp.GradScaler | None = None
    writer: Any = None
    log_dir: Path | None = None  # <logs_base_dir>/<run>: event files, lfw_result.txt
    center: CenterLoss | None = None
    teacher: Any = None
    epoch: int = 0
    step: int = 0
    on_step: StepHook | None = None
    stop: bool = False
    started: float = 0.0  # time.monotonic() when this process began training (lr_anneal)
    loader_wait_s: float = 0.0  # this epoch's time spent waiting for the loader's batches
    saved_epoch: int | None = None  # the epoch of the last checkpoint in model_dir
    losses: list[float] = field(default_factory=list)  # the current epoch's, one per step
    _loader: DataLoader[tuple[torch.Tensor, int, int]] | None = None
    _plan: BatchPlan = field(default_factory=BatchPlan)
    _offsets: np.ndarray | None = None

    def flat_index(self, class_index: np.ndarray, image_index: np.ndarray) -> np.ndarray:
        """Positions in the flat image list (``flatten(dataset)``) of per-class images."""
        if self._offsets is None:
            self._offsets = np.cumsum([0] + [len(c) for c in self.dataset])[:-1]
        return self._offsets[class_index] + image_index

    def load(self, batches: list[list[tuple[int, int]]]) -> Iterator[Any]:
        """Iterate over ``batches`` of (flat image index, round) keys with one long-lived
        loader (its worker processes persist across rounds)."""
        if self._loader is None:
            a = self.args
            paths, labels = flatten(self.dataset)
            augment = Augment(a.image_size, a.random_crop, a.random_flip)
            self._loader = DataLoader(
                FaceImages(paths, labels, augment, a.seed),
                batch_sampler=self._plan,
                num_workers=a.workers,
                pin_memory=self.ctx.device.type == "cuda",
                persistent_workers=a.workers > 0,
                # the workers start from a clean server process, as Python 3.14 starts them
                # by default on Linux: a fork of this process, torch's threads running in
                # it, can deadlock a worker (3.12 and 3.13 warn of it), and every Python
                # then runs the loader the same way
                multiprocessing_context="forkserver" if a.workers > 0 else None,
                # its own generator: drawing the workers' seeds from the global one would move
                # the dropout masks differently for each number of workers
                generator=torch.Generator().manual_seed(a.seed),
            )
        self._plan.batches = batches
        return self._timed(iter(self._loader))

    def _timed(self, batches: Iterator[Any]) -> Iterator[Any]:
        """The batches, adding the time spent waiting for each to ``loader_wait_s``: the
        epoch's log line gives its share, which says whether the loader or the model limits
        the speed."""
        while True:
            asked = time.monotonic()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.loader_wait_s += time.monotonic() - asked
            yield batch


def optimise(run: Run, loss: torch.Tensor) -> None:
    """Backward and one optimiser step (with the AMP scaler when there is one)."""
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()


def to_device_uint8(images: torch.Tensor, run: Run) -> torch.Tensor:
    """The loader's uint8 batch on the training device: on CUDA copied from pinned memory
    without waiting, channels-last as the network's weights are there
    (training.run_setup.build_run)."""
    if run.ctx.device.type == "cuda":
        images = images.to(run.ctx.device, non_blocking=True, memory_format=torch.channels_last)
    return images


def to_device(images: torch.Tensor, run: Run) -> torch.Tensor:
    """The loader's uint8 batch as the network's input, standardised on the training device."""
    return standardize_batch(to_device_uint8(images, run), run.args.standardization)


def _autocast(run: Run) -> Any:
    enabled = run.scaler is not None and run.ctx.device.type == "cuda"
    return torch.autocast(run.ctx.device.type, dtype=torch.float16, enabled=enabled)


def triplet_step(run: Run, images: torch.Tensor) -> float:
    """Train on one batch of triplets (rows a0, p0, n0, a1, ...); returns the global mean loss."""
    run.model.train()
    with _autocast(run):
        features, _ = run.model(to_device(images, run))
    loss = triplet_loss_stacked(F.normalize(features.float(), dim=1), run.args.alpha)
    optimise(run, loss)
    return mean_across(float(loss.detach()), run.ctx)


def _after_step(run: Run, batch: int, loss: float) -> None:
    _advance(run)
    _report(run, batch, run.step, loss)


def _advance(run: Run) -> None:
    """Count the optimiser step and move the weight average (right after the step)."""
    run.step += 1
    if run.average is not None:
        run.average.update(run.net, run.step)


def _report(run: Run, batch: int, step: int, loss: float) -> None:
    run.losses.append(loss)
    if run.writer is not None and run.ctx.is_main:
        run.writer.add_scalar("loss", loss, step)
        run.writer.add_scalar("learning_rate", run.optimizer.param_groups[0]["lr"], step)
    if run.on_step is not None:
        run.on_step(run.epoch, batch, step, loss)


def _set_lr(run: Run) -> bool:
    elapsed = time.monotonic() - run.started
    if getattr(run.args, "lr_anneal", "stairs") == "cosine-time":
        elapsed = mean_across(elapsed, run.ctx)  # the same rate in every process
    lr = learning_rate(run.args, run.epoch, run.step, elapsed)
    if lr is None:
        return False
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return True


@torch.no_grad()
def embed_images(run: Run, images: np.ndarray, round_id: int) -> np.ndarray:
    """Embeddings of flat image indices ``images`` for triplet selection; each process
    embeds a share and all get the whole result."""
    rows, per = shard_rows(len(images), run.ctx)
    keys = [(int(images[r]), round_id) for r in rows]
    # equal chunks of at most batch_size: never a lone image, which batch norm cannot train on
    chunks = np.array_split(np.arange(per), -(-per // run.args.batch_size))
    parts = []
    head = run.model.module if hasattr(run.model, "module") else run.model
    head.train()
    for x, _, _ in run.load([[keys[i] for i in chunk] for chunk in chunks]):
        with _autocast(run):
            features, _ = head(to_device(x, run))
        parts.append(F.normalize(features.float(), dim=1))
    gathered = all_gather_rows(torch.cat(parts), run.ctx, per * run.ctx.world)
    return unshard_rows(gathered, len(images), run.ctx).cpu().numpy()


def _triplet_batches(triplets: np.ndarray, run: Run) -> list[np.ndarray]:
    """This process's triplets of each global batch (whole batches only across processes)."""
    per_batch, world = run.args.batch_size // 3, run.ctx.world
    out = []
    for start in range(0, len(triplets), per_batch):
        chunk = triplets[start : start + per_batch]
        chunk = chunk[: len(chunk) - len(chunk) % world]
        if len(chunk):
            out.append(chunk[run.ctx.rank :: world])
    return out


def _selection_round(
    run: Run, rng: np.random.Generator, round_id: int
) -> list[list[tuple[int, int]]]:
    """Sample people x images, embed, select; this process's triplet batches as loader keys."""
    a = run.args
    sample = sample_people(run.dataset, a.people_per_batch, a.images_per_person, rng)
    images = run.flat_index(sample.class_index, sample.image_index)
    embeddings = embed_images(run, images, round_id)
    triplets, pairs = select_triplets(embeddings, sample.counts, a.alpha, rng, a.triplet_rule)
    logger.debug("round %d: %d triplets from %d pairs", round_id, len(triplets), pairs)
    if run.writer is not None and run.ctx.is_main:
        run.writer.add_scalar("triplets_selected", len(triplets), run.step)
    return [
        [(int(images[i]), round_id) for i in batch.reshape(-1)]
        for batch in _triplet_batches(triplets, run)
    ]


def triplet_epoch(run: Run, bar: tqdm[Any]) -> None:
    """``epoch_size`` batches of triplets, reselecting after each people x images sample."""
    a = run.args
    rng = np.random.default_rng((a.seed, run.epoch))
    batch, round_in_epoch, empty = 0, 0, 0
    while batch < a.epoch_size:
        round_id = run.epoch * 100_000 + round_in_epoch
        round_in_epoch += 1
        batches = _selection_round(run, rng, round_id)
        if not batches:
            empty += 1
            if empty >= MAX_EMPTY_ROUNDS:
                raise RuntimeError(
                    f"no triplets found in {empty} samples in a row; check the data or --alpha"
                )
            continue
        empty = 0
        for x, _, _ in run.load(batches):
            if batch >= a.epoch_size or not _set_lr(run):
                run.stop = batch < a.epoch_size
                return
            loss = triplet_step(run, x)
            batch += 1
            _after_step(run, batch, loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")


def _random_batches(run: Run, rng: np.random.Generator, n: int) -> list[list[int]]:
    """This process's share of ``epoch_size`` random global batches over ``n`` images."""
    a, world = run.args, run.ctx.world
    need = a.epoch_size * a.batch_size
    order = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])[:need]
    out = []
    for start in range(0, need, a.batch_size):
        chunk = order[start : start + a.batch_size]
        chunk = chunk[: len(chunk) - len(chunk) % world]
        out.append([int(i) for i in chunk[run.ctx.rank :: world]])
    return out


def _image_batches(run: Run) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng((run.args.seed, run.epoch))
    n = sum(len(c) for c in run.dataset)
    keys = [[(i, run.epoch) for i in b] for b in _random_batches(run, rng, n)]
    for batch, (x, y, indices) in enumerate(run.load(keys), 1):
        yield batch, x, y, indices


def classifier_epoch(run: Run, bar: tqdm[Any]) -> None:
    """Softmax classification of the identities plus center loss on the embedding."""
    if run.center is None:
        raise RuntimeError("center loss state missing")
    for batch, x, y, _ in _image_batches(run):
        if not _set_lr(run):
            run.stop = True
            return
        run.model.train()
        with _autocast(run):
            features, logits = run.model(to_device(x, run))
        labels = y.to(run.ctx.device)
        loss, parts = softmax_center_loss(
            logits.float(), features.float(), labels, run.center, run.args.center_loss_factor
        )
        optimise(run, loss)
        value = mean_across(float(loss.detach()), run.ctx)
        _after_step(run, batch, value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", center=f"{parts['center']:.4f}")


def distill_epoch(run: Run, bar: tqdm[Any]) -> None:
    """Match the teacher's embeddings of the same images (see training/teacher.py).

    Each step's loss is read (and reported) once the next step is queued: reading it waits
    for the GPU, and right after its own step that wait would leave the GPU idle while the
    next batch is taken and launched."""
    pending: list[tuple[int, int, torch.Tensor]] = []

    def report() -> None:
        for batch, step, loss in pending:
            value = mean_across(float(loss), run.ctx)
            _report(run, batch, step, value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
        pending.clear()

    args = run.args
    warps = {key: getattr(args, f"random_{key}", 0.0) for key in ("rotate", "scale", "color")}
    # (each process of a DDP run warps its own share of the batch differently)
    generator = torch.Generator().manual_seed((args.seed * 100_003 + run.epoch) * 64 + run.ctx.rank)
    for batch, x, _, indices in _image_batches(run):
        if not _set_lr(run):
            run.stop = True
            break
        pixels = to_device_uint8(x, run)
        if any(warps.values()):  # the same warped crops for teacher and student
            pixels = warp_batch(pixels, generator, **warps)
            if run.ctx.device.type == "cuda":
                pixels = pixels.contiguous(memory_format=torch.channels_last)
        target = run.teacher(pixels, indices).to(run.ctx.device, non_blocking=True)
        run.model.train()
        with _autocast(run):
            features, _ = run.model(to_device(pixels, run))
        loss = distillation_loss(F.normalize(features.float(), dim=1), target)
        optimise(run, loss)
        _advance(run)
        report()
        pending.append((batch, run.step, loss.detach()))
    report()


EPOCHS: dict[str, Callable[[Run, tqdm[Any]], None]] = {
    "triplet": triplet_epoch,
    "center": classifier_epoch,
    "distill": distill_epoch,
}
