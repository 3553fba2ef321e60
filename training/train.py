"""`facewatch train triplet`: train FaceNet (Inception-ResNet-v1) as train_tripletloss.py does.

Per epoch: ``epoch_size`` batches (triplet: sample people x images, embed, select triplets,
train on them; center / distill: random batches), then a checkpoint
(``<models_base_dir>/<run>/latest.pt`` and ``epoch-NNNN.pt``) and, with ``--lfw-dir``, the
LFW protocol on the moving-average weights, its figures appended to
``<logs_base_dir>/<run>/lfw_result.txt``. Event files go there too when TensorBoard is
installed. Under torchrun each process trains on its share (DDP). The run is built (or
resumed) by training/run_setup.py.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from training.align import crop_landmarks, read_settings
from training.checkpoint import LATEST, Checkpoint, resume_command, save_epoch
from training.distributed import init_from_env, shutdown
from training.run_setup import build_run
from training.schedule import schedule_epoch
from training.train_loops import EPOCHS, Run, StepHook
from training.train_options import check_options, options_dict

logger = logging.getLogger(__name__)


def checkpoint_of(run: Run, lfw: dict[str, Any] | None = None) -> Checkpoint:
    aligned = read_settings(run.args.data_dir) or {}
    landmarks = crop_landmarks(aligned, run.args.image_size)
    extra: dict[str, Any] = {
        "num_classes": len(run.dataset) if run.args.loss == "center" else None,
        "alignment": aligned.get("alignment", "margin"),
        "margin": aligned.get("margin", run.args.margin),
        "identities": len(run.dataset),
        "training_data": str(run.args.data_dir),
    }
    if landmarks is not None:
        extra["landmarks"] = landmarks
    if run.center is not None:
        extra["centers"] = run.center.centers.detach().cpu()
    if run.scaler is not None:
        extra["scaler"] = run.scaler.state_dict()
    if lfw is not None:
        extra["lfw"] = lfw
    return Checkpoint(
        model={k: v.detach().cpu() for k, v in run.net.state_dict().items()},
        average=None
        if run.average is None
        else {k: v.cpu() for k, v in run.average.state_dict().items()},
        optimizer=run.optimizer.state_dict(),
        epoch=run.epoch,
        step=run.step,
        options=options_dict(run.args),
        extra=extra,
    )


def _prune(model_dir: Path, keep: int) -> None:
    files = sorted(model_dir.glob("epoch-*.pt"))
    for old in files[: max(len(files) - keep, 0)]:
        old.unlink()


def _evaluate_lfw(run: Run) -> dict[str, Any] | None:
    if not run.args.lfw_dir or not run.ctx.is_main:
        return None
    from training.embedders import TorchEmbedder
    from training.validate import evaluate_aligned

    net = run.average.model if run.average is not None else run.net
    embedder = TorchEmbedder(net, run.args.image_size, run.args.standardization, run.ctx.device)
    result = evaluate_aligned(
        embedder,
        run.args.lfw_pairs,
        run.args.lfw_dir,
        run.args.lfw_nrof_folds,
        run.args.lfw_batch_size,
    )
    run.net.train()
    logger.info("epoch %d LFW: %s", run.epoch, result.summary())
    if run.writer is not None:
        run.writer.add_scalar("lfw/accuracy", result.accuracy_mean, run.step)
        run.writer.add_scalar("lfw/val_rate", result.val_mean, run.step)
        run.writer.add_scalar("lfw/auc", result.auc, run.step)
    _append_lfw_result(run, result.accuracy_mean, result.val_mean)
    return {k: v for k, v in result.to_json().items() if k not in ("tpr", "fpr")}


LFW_RESULT = "lfw_result.txt"


def _append_lfw_result(run: Run, accuracy: float, val: float) -> None:
    """One line per evaluation in ``<log_dir>/lfw_result.txt``, as the original's: the
    steps trained, the mean accuracy and VAL@FAR=1e-3, tab-separated (scripts tail it)."""
    if run.log_dir is None:
        return
    run.log_dir.mkdir(parents=True, exist_ok=True)
    with open(run.log_dir / LFW_RESULT, "a") as out:
        out.write(f"{run.step}\t{accuracy:.5f}\t{val:.5f}\n")


def rate_text(rate: float) -> str:
    """A rate for the epoch line: whole above 10, else two significant digits (a CPU dry run's
    0.43 images/s is not "0")."""
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"


def _log_epoch(run: Run, seconds: float) -> None:
    """One line per epoch (the progress bar's figures, for logs without a terminal)."""
    if not run.ctx.is_main or not run.losses:
        return
    steps = len(run.losses)
    rate = steps * run.args.batch_size * run.ctx.world / max(seconds, 1e-9)
    logger.info(
        "epoch %d: loss %.4f (mean of %d steps, last %.4f), lr %.3g, %.0f s, ~%s images/s"
        " (%.0f %% of it waiting for the loader)",
        run.epoch,
        sum(run.losses) / steps,
        steps,
        run.losses[-1],
        run.optimizer.param_groups[0]["lr"],
        seconds,
        rate_text(rate),
        100 * min(run.loader_wait_s / max(seconds, 1e-9), 1.0),
    )


def _epoch_end(run: Run) -> None:
    lfw = _evaluate_lfw(run)
    if run.ctx.is_main:
        save_epoch(
            checkpoint_of(run, lfw), run.model_dir, keep_every_epoch=run.args.keep_checkpoints > 0
        )
        run.saved_epoch = run.epoch
        _prune(run.model_dir, run.args.keep_checkpoints)
    if run.ctx.enabled:
        torch.distributed.barrier()


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where it stopped and how to go on."""


def _interrupted(run: Run) -> str:
    saved = run.saved_epoch or 0
    # past the last checkpoint's epoch: interrupted while ending that epoch (LFW, saving)
    epoch = run.epoch if run.epoch > saved else run.epoch + 1
    where = f"epoch {epoch} of {run.args.max_nrof_epochs} interrupted (step {run.step})"
    if run.saved_epoch is None:
        return f"{where}; no checkpoint saved in {run.model_dir} yet: nothing to resume"
    return (
        f"{where}; last checkpoint: {run.model_dir / LATEST} (epoch {run.saved_epoch}); "
        f"continue with: {resume_command(run.args, run.model_dir)}"
    )


def train_run(run: Run) -> Path:
    """Run epochs from ``run.epoch`` to ``max_nrof_epochs``; returns the run's model directory.
    Ctrl-C raises TrainingInterrupted; a run that fails before its first checkpoint leaves no
    empty run directory behind."""
    created = not run.model_dir.exists()
    run.model_dir.mkdir(parents=True, exist_ok=True)
    try:
        _epochs(run)
    except KeyboardInterrupt:
        raise TrainingInterrupted(_interrupted(run)) from None
    finally:
        if run.writer is not None:
            run.writer.close()
        if created and run.ctx.is_main and not any(run.model_dir.iterdir()):
            run.model_dir.rmdir()
    return run.model_dir


def _epochs(run: Run) -> None:
    args = run.args
    epoch_fn = EPOCHS[args.loss]
    started = run.started = time.monotonic()
    while run.epoch < args.max_nrof_epochs and not run.stop:
        torch.manual_seed(args.seed * 1000 + run.epoch)
        run.losses.clear()
        run.loader_wait_s = 0.0
        epoch_started = time.monotonic()
        with tqdm(
            total=args.epoch_size,
            desc=f"epoch {run.epoch + 1}/{args.max_nrof_epochs}",
            disable=not run.ctx.is_main,
        ) as bar:
            epoch_fn(run, bar)
        if run.stop:
            logger.info(
                "learning rate schedule says stop at epoch %d (%s)",
                schedule_epoch(args, run.epoch),
                args.learning_rate_schedule_file,
            )
            break
        run.epoch += 1
        _log_epoch(run, time.monotonic() - epoch_started)
        _epoch_end(run)
        if args.time_limit_min and time.monotonic() - started > 60 * args.time_limit_min:
            logger.info(
                "time limit of %.1f min reached after epoch %d", args.time_limit_min, run.epoch
            )
            break


def train(args: argparse.Namespace, on_step: StepHook | None = None) -> Path:
    """Check the options, join the process group when under torchrun, train."""
    if not args.resume:
        check_options(args)  # a resumed run's are checked once its own are adopted
    ctx = init_from_env(args.gpu)
    try:
        run = build_run(args, ctx, on_step)
        return train_run(run)
    finally:
        if ctx.enabled:
            shutdown()
