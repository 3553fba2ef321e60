"""`facewatch train triplet`: train FaceNet (Inception-ResNet-v1) as train_tripletloss.py does.

Per epoch: ``epoch_size`` batches (triplet: sample people x images, embed, select triplets,
train on them; center / distill: random batches), then a checkpoint
(``<models_base_dir>/<run>/latest.pt`` and ``epoch-NNNN.pt``) and, with ``--lfw-dir``, the
LFW protocol on the moving-average weights, its figures appended to
``<logs_base_dir>/<run>/lfw_result.txt``. Event files go there too when TensorBoard is
installed. Under torchrun each process trains on its share (DDP).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.align import crop_landmarks, read_settings
from training.checkpoint import (
    LATEST,
    Checkpoint,
    WeightAverage,
    adopt_run_options,
    last_good,
    resolve_resume,
    resume_command,
    save_epoch,
)
from training.data import ImageClass, load_dataset
from training.distributed import DistContext, convert_sync_batchnorm, init_from_env, shutdown
from training.facenet_nets import ModelFileError, build_model, load_pretrained
from training.lfw_pairs import nrof_folds_for, read_pairs
from training.losses import CenterLoss
from training.run_checks import (
    absolute_paths,
    check_crops,
    check_identities,
    check_resume,
    resumed_paths,
)
from training.schedule import schedule_epoch
from training.tf_optimizers import TfAdam, TfRMSProp
from training.train_loops import EPOCHS, FeaturesHead, Run, StepHook
from training.train_options import OptionError, check_options, given_as, options_dict

logger = logging.getLogger(__name__)


def make_optimizer(
    name: str, net: nn.Module, lr: float, weight_decay: float, fused: bool = False
) -> torch.optim.Optimizer:
    """The original project's optimisers with its hyper-parameters (TensorFlow's defaults),
    updating as TensorFlow 1.x did: ADAM and RMSPROP through ``training.tf_optimizers``
    (torch's own place epsilon elsewhere, and RMSProp's mean square starts at zeros).
    ADAM_TORCH is torch's Adam with ADAM's settings: its first steps are larger (up to 29
    times with epsilon 0.1), and facewatch's distillation recipes were tuned with it.

    Weight decay applies to convolution and linear weights only (as the original's
    regularisers did), not to biases or batch-norm parameters. ``fused`` (on CUDA) makes
    ADAM's step a few multi-tensor kernels, and spares the AMP scaler its wait for the GPU
    before each step (the fused kernel skips a step with inf gradients itself).
    """
    decay = [p for p in net.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in net.parameters() if p.requires_grad and p.dim() <= 1]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    if name == "ADAGRAD":
        return torch.optim.Adagrad(groups, lr=lr, initial_accumulator_value=0.1)
    if name == "ADADELTA":
        return torch.optim.Adadelta(groups, lr=lr, rho=0.9, eps=1e-6)
    if name == "ADAM":
        return TfAdam(groups, lr=lr, betas=(0.9, 0.999), eps=0.1, fused=fused or None)
    if name == "ADAM_TORCH":
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=0.1, fused=fused or None)
    if name == "RMSPROP":
        return TfRMSProp(groups, lr=lr, decay=0.9, momentum=0.9, eps=1.0)
    if name == "MOM":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}")


def seed_everything(seed: int) -> None:
    """The run's seeds, and its CPU threads fixed: until a torch.set_num_threads call, the
    BLAS under torch (MKL) may choose how many threads each of its calls takes ("dynamic"),
    which changes the order of its sums; a CPU run's weights were not bit for bit the same
    when something earlier in the process (an engine of the torch backend) had made the call
    and when nothing had."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(torch.get_num_threads())


def _tensorboard(log_dir: Path | None, ctx: DistContext, step: int) -> Any:
    """The event writer; a resumed run first drops the events logged after its checkpoint
    (the steps of the interrupted epoch are logged again). None without a log directory."""
    if not ctx.is_main or log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed; no event files")
        return None
    return SummaryWriter(str(log_dir), purge_step=step or None)


def _run_dirs(args: argparse.Namespace, resume_path: Path | None) -> tuple[Path, Path | None]:
    if resume_path is not None:
        model_dir = resume_path.absolute().parent
    else:
        name = args.run_name or time.strftime("%Y%m%d-%H%M%S")
        model_dir = Path(args.models_base_dir).expanduser() / name
    if args.logs_base_dir is None:  # see run_checks._relative_logs
        return model_dir, None
    return model_dir, Path(args.logs_base_dir).expanduser() / model_dir.name


def _build_net(
    args: argparse.Namespace, num_classes: int | None, resume: Checkpoint | None
) -> nn.Module:
    net = build_model(args.model_def, args.embedding_size, args.keep_probability, num_classes)
    if resume is not None:
        net.load_state_dict(resume.model)
    elif args.pretrained_model is not None:
        start_from(net, args.pretrained_model)
    return net


def start_from(net: nn.Module, path: str | Path) -> None:
    """``--pretrained-model``: the weights of a state dict, a checkpoint, or an
    Inception-ResNet-v1 ONNX model that facewatch exported."""
    state = None
    if Path(path).suffix.lower() == ".onnx":
        from training.export_facenet import student_state

        state = student_state(path)
    load_pretrained(net, path, strict=False, state=state)
    logger.info("started from %s", path)


def _loss_state(run: Run) -> None:
    """The AMP scaler, the center loss's centers, the distillation teacher."""
    args, ctx = run.args, run.ctx
    run.scaler = torch.amp.GradScaler("cuda") if args.amp and ctx.device.type == "cuda" else None
    if args.amp and run.scaler is None:
        logger.warning("--amp needs CUDA; training in fp32 on %s", ctx.device)
    if args.loss == "center":
        center = CenterLoss(len(run.dataset), args.embedding_size, args.center_loss_alfa)
        run.center = center.to(ctx.device)
    if args.loss == "distill":
        from training.teacher import load_teacher

        teacher = load_teacher(args.teacher, run.dataset, args.data_dir, args.image_size)
        run.teacher = teacher.to(ctx.device)


def build_run(args: argparse.Namespace, ctx: DistContext, on_step: StepHook | None = None) -> Run:
    """Everything a training run needs, resumed from a checkpoint when asked."""
    resume, resume_path = _resumed(args)
    dataset = _checked_inputs(args)
    num_classes = len(dataset) if args.loss == "center" else None
    if resume is not None and num_classes != resume.extra.get("num_classes"):
        raise OptionError(
            f"{resume_path}: trained on {resume.extra.get('num_classes')} classes, "
            f"{args.data_dir} has {num_classes}"
        )
    seed_everything(args.seed)
    net = _build_net(args, num_classes, resume)
    average = _on_device(net, args, ctx, resume)
    model: nn.Module = FeaturesHead(net)
    if ctx.enabled:
        convert_sync_batchnorm(net, ctx.device)
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = make_optimizer(
        args.optimizer,
        net,
        max(args.learning_rate, 1e-12),
        args.weight_decay,
        fused=ctx.device.type == "cuda",
    )
    model_dir, log_dir = _run_dirs(args, resume_path)
    if resume is None and (model_dir / "latest.pt").is_file():
        logger.warning(
            "%s holds a run already; starting over (use --resume to continue it)", model_dir
        )
    run = Run(args, ctx, dataset, net, model, optimizer, average, model_dir, on_step=on_step)
    _loss_state(run)
    if resume is not None:
        _restore(run, resume, resume_path)
    run.log_dir = log_dir
    run.writer = _tensorboard(log_dir, ctx, run.step)
    return run


def _resumed(args: argparse.Namespace) -> tuple[Checkpoint | None, Path | None]:
    """The checkpoint ``--resume`` names (None without it), its options adopted into
    ``args``; every path in ``args`` made absolute (saved so: --resume works from any
    directory)."""
    resume_path = resolve_resume(args.resume, Path(args.models_base_dir)) if args.resume else None
    resume = _load_resume(resume_path) if resume_path is not None else None
    keep: frozenset[str] = frozenset()
    if resume is not None and resume_path is not None:
        adopted = adopt_run_options(args, resume.options, resume_path)
        keep = resumed_paths(args, resume.options, adopted, resume_path)
        check_resume(args, resume.epoch, resume_path)
    absolute_paths(args, keep)
    if resume is not None:
        check_options(args)
    return resume, resume_path


def _load_resume(path: Path) -> Checkpoint:
    """The checkpoint to resume; a damaged one (a power cut, a full disk) names the newest
    checkpoint of the run that reads."""
    try:
        return Checkpoint.load(path)
    except ModelFileError as exc:
        good = last_good(path)
        if good is None:
            raise
        raise ModelFileError(f"{exc}; the newest that reads: --resume {good}") from None


def _checked_inputs(args: argparse.Namespace) -> list[ImageClass]:
    """The training dataset, checked; the LFW pairs too when given (fail now, not after the
    first epoch)."""
    dataset = load_dataset(args.data_dir, args.min_nrof_images_per_class)
    check_identities(args, dataset)
    check_crops(args, dataset)
    if args.lfw_dir:
        if not Path(args.lfw_pairs).is_file():
            raise OptionError(
                f"{given_as(args, 'lfw_pairs')}: pairs file not found (for --lfw-dir)"
            )
        pairs, header = read_pairs(args.lfw_pairs, args.lfw_dir)
        nrof_folds_for(args.lfw_pairs, pairs, header, args.lfw_nrof_folds)
    return dataset


def _on_device(
    net: nn.Module, args: argparse.Namespace, ctx: DistContext, resume: Checkpoint | None
) -> WeightAverage | None:
    """Move the network (and its moving average, when asked for) to the run's device."""
    average = (
        WeightAverage(net, args.moving_average_decay) if args.moving_average_decay > 0 else None
    )
    net.to(ctx.device)
    if average is not None:
        average.model.to(ctx.device)
        if resume is not None and resume.average is not None:
            average.load_state_dict(resume.average)
    if ctx.device.type == "cuda":
        # one crop size: cuDNN times its algorithms once; channels-last is the layout that
        # cuDNN's tensor-core convolutions prefer for fp16
        torch.backends.cudnn.benchmark = True
        for module in [net] + ([average.model] if average is not None else []):
            module.to(memory_format=torch.channels_last)
    return average


def _restore(run: Run, ckpt: Checkpoint, path: Path | None) -> None:
    if ckpt.optimizer is not None:
        run.optimizer.load_state_dict(ckpt.optimizer)
    if run.center is not None and "centers" in ckpt.extra:
        run.center.centers.copy_(ckpt.extra["centers"])
    if run.scaler is not None and "scaler" in ckpt.extra:
        run.scaler.load_state_dict(ckpt.extra["scaler"])
    run.epoch, run.step = ckpt.epoch, ckpt.step
    run.saved_epoch = ckpt.epoch
    logger.info("resumed %s at epoch %d, step %d", path, run.epoch, run.step)


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


def _log_epoch(run: Run, seconds: float) -> None:
    """One line per epoch (the progress bar's figures, for logs without a terminal)."""
    if not run.ctx.is_main or not run.losses:
        return
    steps = len(run.losses)
    rate = steps * run.args.batch_size * run.ctx.world / max(seconds, 1e-9)
    logger.info(
        "epoch %d: loss %.4f (mean of %d steps, last %.4f), lr %.3g, %.0f s, ~%.0f images/s"
        " (%.0f %% of it waiting for the loader)",
        run.epoch,
        sum(run.losses) / steps,
        steps,
        run.losses[-1],
        run.optimizer.param_groups[0]["lr"],
        seconds,
        rate,
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
