"""A `facewatch train triplet` run built before its first step (``build_run``): the dataset
(and the LFW pairs) checked, the network built or started from a pretrained model, moved to its
device with its moving average and wrapped for DDP, the optimiser (the original's, updating as
TensorFlow 1.x did), the loss's state, a resumed run's checkpoint restored. training/train.py
runs the epochs.
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

from training.checkpoint import (
    Checkpoint,
    WeightAverage,
    adopt_run_options,
    last_good,
    resolve_resume,
)
from training.data import ImageClass, load_dataset
from training.distributed import DistContext, convert_sync_batchnorm
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
from training.tf_optimizers import TfAdam, TfRMSProp
from training.train_loops import FeaturesHead, Run, StepHook
from training.train_options import OptionError, check_options, given_as

# the log lines of a run's set-up under the name they had before it left training/train.py
# (the log shows the name)
logger = logging.getLogger("training.train")


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
