"""Learning rate: the initial rate (or a schedule file) decayed in stairs, as the original
``train_tripletloss.py`` computes it, or annealed along a cosine over the run's time limit."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from training.train_options import OptionError

logger = logging.getLogger(__name__)


def read_schedule(path: Path, epoch: int) -> float | None:
    """Learning rate for ``epoch`` (as the file counts them: ``schedule_epoch``) from
    'epoch: rate' lines; None means stop: a rate of '-' or, as in the original project's
    schedule files (``276: -1``), one <= 0."""
    rate: float | None = None
    seen = False
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise OptionError(f"{path}: cannot read learning rate schedule: {exc}") from None
    for number, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            first, value = (part.strip() for part in line.split(":"))
            start, lr = int(first), (None if value == "-" else float(value))
            if lr is not None and lr <= 0:
                lr = None
        except ValueError:
            raise OptionError(
                f"{path}:{number}: expected 'epoch: learning_rate', got {line!r}"
            ) from None
        if start > epoch:
            break
        rate, seen = lr, True
    if not seen:
        raise OptionError(
            f"{path}: no learning rate given for epoch {epoch} (the first line must be for epoch 0)"
        )
    return rate


def schedule_epoch(args: argparse.Namespace, epoch: int) -> int:
    """The 0-based ``epoch`` as a schedule file counts it: from 0 as train_tripletloss.py
    (triplet; distill too), from 1 with --loss center, as the original's center-loss trainer
    train_softmax.py (its classifier schedules' ``100: 0.005`` is the 100th epoch's rate)."""
    return epoch + 1 if getattr(args, "loss", "triplet") == "center" else epoch


def learning_rate(
    args: argparse.Namespace, epoch: int, step: int, elapsed_s: float = 0.0
) -> float | None:
    """The rate for this step: the initial (or scheduled) rate decayed in stairs of
    ``learning_rate_decay_epochs * epoch_size`` steps by ``learning_rate_decay_factor``; with
    ``lr_anneal: cosine-time``, multiplied instead by (1 + cos(pi * t)) / 2, where t is the
    share of ``time_limit_min`` that ``elapsed_s`` (of training) has used, 0 past the limit."""
    base = (
        args.learning_rate
        if args.learning_rate > 0
        else read_schedule(args.learning_rate_schedule_file, schedule_epoch(args, epoch))
    )
    if base is None:
        return None
    if getattr(args, "lr_anneal", "stairs") == "cosine-time":
        share = min(elapsed_s / (60.0 * args.time_limit_min), 1.0)
        return base * 0.5 * (1.0 + math.cos(math.pi * share))
    stairs = step // (args.learning_rate_decay_epochs * args.epoch_size)
    return base * args.learning_rate_decay_factor**stairs
