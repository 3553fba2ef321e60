"""Checkpoints (one per epoch, resumable) and the moving average of the weights."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.base import sync_folder
from training.facenet_nets import build_model, read_torch_file

logger = logging.getLogger(__name__)

LATEST = "latest.pt"


class WeightAverage:
    """Exponential moving average of the trainable weights, as TensorFlow's
    ``ExponentialMovingAverage(decay, num_updates=step)`` the original project used:
    ``decay_t = min(decay, (1 + t) / (10 + t))``; buffers (batch-norm statistics) are
    copied, not averaged. ``decay <= 0`` disables averaging (the raw weights are used).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not decay < 1.0:
            raise ValueError(f"moving_average_decay must be < 1, got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """One step: ``average = decay * average + (1 - decay) * weight``, in a few multi-tensor
        kernels rather than two per weight and one per buffer (for Inception-ResNet-v1's 378
        weights and 336 buffers, 1,092 kernel launches a step on a GPU)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step)) if self.decay > 0 else 0.0
        own, own_buffers = dict(self.model.named_parameters()), dict(self.model.named_buffers())
        params, buffers = list(model.named_parameters()), list(model.named_buffers())
        torch._foreach_lerp_(
            [own[n] for n, _ in params], [p.detach() for _, p in params], 1 - decay
        )
        torch._foreach_copy_([own_buffers[n] for n, _ in buffers], [b for _, b in buffers])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


@dataclass
class Checkpoint:
    """Everything needed to resume, validate or export a run."""

    model: dict[str, torch.Tensor]
    average: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any] | None
    epoch: int  # epochs completed
    step: int  # optimiser steps completed
    options: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write atomically, and flushed to the disk: a crash or a power cut mid-write leaves
        the previous file intact."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("wb") as out:
            torch.save(self.__dict__, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        sync_folder(path.parent)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        raw = _read(path)
        if not _is_checkpoint(raw):
            raise ValueError(f"{path}: not a facewatch training checkpoint")
        return cls(**raw)

    def eval_weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights when there are any, else the raw ones."""
        return self.average if self.average is not None else self.model

    def network(self) -> nn.Module:
        """The network with the weights to evaluate, in eval mode (dropout off)."""
        opts = self.options
        net = build_model(
            opts["model_def"], opts["embedding_size"], 1.0, self.extra.get("num_classes")
        )
        net.load_state_dict(self.eval_weights())
        return net.eval()


def last_good(damaged: Path) -> Path | None:
    """The newest checkpoint of ``damaged``'s run that reads (an epoch file that is not the
    same file: each epoch's is a link to that epoch's latest.pt), or None."""
    for candidate in sorted(damaged.parent.glob("epoch-*.pt"), reverse=True):
        try:
            if candidate.samefile(damaged):
                continue
            Checkpoint.load(candidate)
        except (OSError, ValueError):
            continue
        return candidate
    return None


def _read(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    return read_torch_file(path)


def _is_checkpoint(raw: Any) -> bool:
    return isinstance(raw, dict) and "model" in raw and "options" in raw


def load_model_file(path: str | Path) -> Checkpoint:
    """A facewatch training checkpoint, or a facenet-pytorch ``InceptionResnetV1`` state dict
    (its published VGGFace2 / CASIA-WebFace weights, say) as a checkpoint of zero epochs.

    The state dict's classifier head (``logits.*``) is dropped: only embeddings are kept. Its
    preprocessing is that of the published weights (David Sandberg's 2018 FaceNet models,
    which facenet-pytorch converted): 160 px crops of the MTCNN box with a margin of 32 px,
    ``(x - 127.5) / 128``.
    """
    raw = _read(path)
    if _is_checkpoint(raw):
        return Checkpoint(**raw)
    return _imported(_inception_state(raw, path), path)


def _inception_state(raw: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """``raw`` checked to be facenet-pytorch's Inception-ResNet-v1 state dict (ValueError
    naming ``path`` otherwise), without its classifier head."""
    if (
        not isinstance(raw, dict)
        or not raw
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items())
    ):
        raise ValueError(
            f"{path}: neither a facewatch training checkpoint nor a PyTorch state dict"
        )
    state = {k: v for k, v in raw.items() if not k.startswith("logits.")}
    head = state.get("last_linear.weight")
    if head is None or head.dim() != 2:
        raise ValueError(
            f"{path}: a state dict without `last_linear.weight`: not an Inception-ResNet-v1 "
            "with facenet-pytorch's parameter names"
        )
    net = build_model("inception_resnet_v1", int(head.shape[0]), 1.0)
    missing = sorted(set(net.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(net.state_dict()))
    if missing or unexpected:
        raise ValueError(
            f"{path}: not an Inception-ResNet-v1 state dict with facenet-pytorch's parameter "
            f"names: {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]})"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # a shape differs
        raise ValueError(f"{path}: does not fit Inception-ResNet-v1: {exc}") from None
    return state


def _imported(state: dict[str, torch.Tensor], path: str | Path) -> Checkpoint:
    """facenet-pytorch's weights as a checkpoint of zero epochs, with the preprocessing of
    the published weights."""
    head = state["last_linear.weight"]
    return Checkpoint(
        model=state,
        average=None,
        optimizer=None,
        epoch=0,
        step=0,
        options={
            "model_def": "inception_resnet_v1",
            "embedding_size": int(head.shape[0]),
            "image_size": 160,
            "standardization": "fixed",
            "loss": "none (imported)",
        },
        extra={
            "alignment": "margin",
            "margin": 32,
            "training_data": "not stated (imported weights)",
            "source": f"facenet-pytorch InceptionResnetV1 state dict {Path(path).name}",
        },
    )


def save_epoch(ckpt: Checkpoint, model_dir: Path, keep_every_epoch: bool = True) -> Path:
    """``model_dir/latest.pt`` and (optional) ``model_dir/epoch-NNNN.pt``: a hard link to the
    same bytes where the file system has them (a checkpoint is hundreds of MB; the next
    ``latest.pt`` is a new file, so the epoch's stays as it was), else a second copy."""
    latest = model_dir / LATEST
    ckpt.save(latest)
    if keep_every_epoch:
        epoch_file = model_dir / f"epoch-{ckpt.epoch:04d}.pt"
        epoch_file.unlink(missing_ok=True)
        try:
            os.link(latest, epoch_file)
        except OSError:
            ckpt.save(epoch_file)
    logger.info("saved %s (epoch %d, step %d)", latest, ckpt.epoch, ckpt.step)
    return latest


def resolve_resume(resume: str, models_base_dir: Path) -> Path:
    """``--resume``: a checkpoint file, a run directory, or ``auto`` (newest run's latest)."""
    if resume == "auto":
        runs = sorted(
            models_base_dir.expanduser().glob(f"*/{LATEST}"), key=lambda p: p.stat().st_mtime
        )
        if not runs:
            raise FileNotFoundError(f"{models_base_dir}: no run with a {LATEST} to resume")
        return runs[-1]
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint to resume not found")
    return path


# Options a run keeps for life: they decide the network, its optimizer state or its inputs.
FIXED_ON_RESUME = (
    "model_def",
    "embedding_size",
    "loss",
    "optimizer",
    "image_size",
    "standardization",
)
# Options of this process and machine, never taken from the checkpoint.
# Optimisers that keep the same state: a run may resume with the other, with a warning (runs
# saved before ADAM updated as TensorFlow 1.x did trained with what is now ADAM_TORCH).
SAME_STATE = {"ADAM_TORCH": "ADAM"}
LOCAL_OPTIONS = frozenset(
    {"resume", "config", "gpu", "nproc_per_node", "workers", "gpu_memory_fraction", "amp"}
)
SAME_NETWORK = {"models.inception_resnet_v1": "inception_resnet_v1"}  # --model-def spellings


def adopt_run_options(args: Any, saved: dict[str, Any], source: Path) -> set[str]:
    """``--resume``: the run continues with its own options. Those the command line did not
    give come from the checkpoint; one it gave differently is refused when the run keeps it
    for life (FIXED_ON_RESUME) and otherwise used, with a warning. Returns the options taken
    from the checkpoint."""
    from training.train_options import GIVEN, OptionError, build_parser

    paths = {a.dest for a in build_parser()._actions if a.type is Path}
    given = getattr(args, GIVEN, set())
    refused, adopted = [], set()
    for key, value in saved.items():
        if key in LOCAL_OPTIONS or key.startswith("_") or not hasattr(args, key):
            continue
        ours = getattr(args, key)
        theirs = Path(value) if key in paths and value is not None else value
        if key not in given:
            setattr(args, key, theirs)
            adopted.add(key)
        elif not _same(key, ours, theirs):
            flag = "--" + key.replace("_", "-")
            if key in FIXED_ON_RESUME and not _same_state(key, ours, theirs):
                refused.append(f"{flag} {ours} (the run has {theirs})")
            else:
                logger.warning("resuming with %s %s; the run had %s", flag, ours, theirs)
    if refused:
        raise OptionError(
            f"{source}: cannot resume with {'; '.join(refused)}: the run keeps these for life; "
            "drop them to continue it, or start a new run (--run-name)"
        )
    return adopted


def _same_state(key: str, ours: Any, theirs: Any) -> bool:
    """Whether two optimisers keep the same state (SAME_STATE)."""
    return key == "optimizer" and SAME_STATE.get(ours, ours) == SAME_STATE.get(theirs, theirs)


def _same(key: str, ours: Any, theirs: Any) -> bool:
    """Whether a value the command line gives is the run's own. Path options compare as
    absolute paths (the run saved them so; a command line may give them relative)."""
    from training.run_checks import PATH_OPTIONS

    if key in PATH_OPTIONS and ours not in (None, "") and theirs not in (None, ""):
        return Path(ours).expanduser().absolute() == Path(theirs).expanduser().absolute()
    return bool(SAME_NETWORK.get(ours, ours) == SAME_NETWORK.get(theirs, theirs))


def resume_command(args: Any, model_dir: Path) -> str:
    """The command that continues a run: ``--resume`` and the machine-local options the user
    gave (the checkpoint does not keep them: --gpu, --workers, --amp, --nproc-per-node)."""
    import shlex

    from training.train_options import GIVEN

    given = getattr(args, GIVEN, set())
    words = ["facewatch", "train", "triplet", "--resume", str(model_dir)]
    for key in ("gpu", "workers"):
        if key in given and getattr(args, key, None) is not None:
            words += [f"--{key}", str(getattr(args, key))]
    if "amp" in given and getattr(args, "amp", False):
        words.append("--amp")
    # one of --nproc-per-node's processes (or torchrun's on one machine): as many again
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    if local == os.environ.get("WORLD_SIZE") and int(local) > 1:
        words += ["--nproc-per-node", local]
    return shlex.join(words)
