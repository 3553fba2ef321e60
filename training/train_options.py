"""Options of `facewatch train triplet`: the original ``train_tripletloss.py`` options with
the same meaning and defaults (``--max-nrof-epochs`` and ``--max_nrof_epochs`` both work),
plus facewatch's: --gpu, --resume, --amp, --workers, --loss, --teacher, --config.

A YAML recipe (``--config``) gives values for any option (keys with - or _); an option given
on the command line wins over the recipe, even when it repeats the built-in default.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from training.choices import MIN_INPUT_SIZE, MODEL_DEF_NAMES, RULES, STANDARDIZATIONS

logger = logging.getLogger(__name__)

# the original's five, updating as TensorFlow 1.x did, and torch's own Adam (the recipes')
OPTIMIZERS = ("ADAGRAD", "ADADELTA", "ADAM", "RMSPROP", "MOM", "ADAM_TORCH")
LOSSES = ("triplet", "center", "distill")


class OptionError(ValueError):
    """An option value out of range; the message names the option."""


def _opt(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add ``--name-with-dashes`` and its original ``--name_with_underscores`` spelling; an
    on/off flag also gets its ``--no-`` form (to turn off what a recipe or a run turned on)."""
    if kwargs.get("action") == "store_true":
        kwargs = {**kwargs, "action": argparse.BooleanOptionalAction, "default": False}
    dashed = "--" + name.replace("_", "-")
    flags = [dashed] if "_" not in name else [dashed, "--" + name]
    parser.add_argument(*flags, dest=name, **kwargs)


ORIGINAL_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "logs_base_dir",
        {
            "type": Path,
            "default": Path("~/logs/facenet"),
            "help": "event logs go under here (one run directory per run)",
        },
    ),
    (
        "models_base_dir",
        {
            "type": Path,
            "default": Path("~/models/facenet"),
            "help": "checkpoints go under here (one run directory per run)",
        },
    ),
    (
        "gpu_memory_fraction",
        {
            "type": float,
            "default": 1.0,
            "help": "accepted for compatibility and ignored (PyTorch allocates on demand); use --gpu",
        },
    ),
    (
        "pretrained_model",
        {
            "type": Path,
            "default": None,
            "help": "state dict or checkpoint to start from (facenet-pytorch .pt files load too), "
            "or an Inception-ResNet-v1 ONNX model that facewatch exported (its weights)",
        },
    ),
    (
        "data_dir",
        {
            "type": Path,
            "default": Path("~/datasets/casia/casia_maxpy_mtcnnalign_182_160"),
            "help": "aligned face crops, one folder per identity",
        },
    ),
    (
        "model_def",
        {
            "default": "models.inception_resnet_v1",
            "choices": sorted(MODEL_DEF_NAMES),
            "help": "network definition",
        },
    ),
    ("max_nrof_epochs", {"type": int, "default": 500, "help": "number of epochs to run"}),
    (
        "batch_size",
        {
            "type": int,
            "default": 90,
            "help": "images per training batch (a multiple of 3: whole triplets)",
        },
    ),
    ("image_size", {"type": int, "default": 160, "help": "network input size in pixels (square)"}),
    (
        "people_per_batch",
        {"type": int, "default": 45, "help": "people sampled for each triplet selection"},
    ),
    ("images_per_person", {"type": int, "default": 40, "help": "images sampled per person"}),
    ("epoch_size", {"type": int, "default": 1000, "help": "batches per epoch"}),
    ("alpha", {"type": float, "default": 0.2, "help": "triplet loss margin"}),
    ("embedding_size", {"type": int, "default": 128, "help": "dimensions of the embedding"}),
    (
        "random_crop",
        {
            "action": "store_true",
            "help": "random crops of image_size from larger training images (else centre crop)",
        },
    ),
    ("random_flip", {"action": "store_true", "help": "random horizontal flips of training images"}),
    (
        "keep_probability",
        {"type": float, "default": 1.0, "help": "dropout keep probability of the last layer"},
    ),
    (
        "weight_decay",
        {
            "type": float,
            "default": 0.0,
            "help": "L2 weight regularisation (on conv / linear weights)",
        },
    ),
    (
        "optimizer",
        {
            "type": str.upper,
            "default": "ADAGRAD",
            "choices": OPTIMIZERS,
            "help": "optimiser, with the original's settings, updating as its TensorFlow 1.x "
            "did (ADAM adds its epsilon 0.1 before the bias correction: its first ~1000 steps "
            "are smaller than torch's; RMSPROP's mean square starts at ones, epsilon 1.0 "
            "inside the root). ADAM_TORCH: torch.optim.Adam with the same settings (epsilon "
            "after the correction), which facewatch's distillation recipes were tuned with",
        },
    ),
    (
        "learning_rate",
        {
            "type": float,
            "default": 0.1,
            "help": "initial learning rate; 0 or negative: use --learning-rate-schedule-file",
        },
    ),
    (
        "learning_rate_decay_epochs",
        {"type": int, "default": 100, "help": "epochs between learning rate decays"},
    ),
    (
        "learning_rate_decay_factor",
        {"type": float, "default": 1.0, "help": "learning rate decay factor"},
    ),
    (
        "moving_average_decay",
        {
            "type": float,
            "default": 0.9999,
            "help": "exponential moving average decay of the weights (evaluation and export use the average; 0 disables)",
        },
    ),
    ("seed", {"type": int, "default": 666, "help": "random seed"}),
    (
        "learning_rate_schedule_file",
        {
            "type": Path,
            "default": Path("data/learning_rate_schedule.txt"),
            "help": "'epoch: learning_rate' lines (used when --learning-rate is negative; '-' "
            "stops); epochs count from 0 as in train_tripletloss.py, from 1 with --loss center "
            "as in the original's train_softmax.py",
        },
    ),
    ("lfw_pairs", {"type": Path, "default": Path("data/pairs.txt"), "help": "LFW pairs file"}),
    (
        "lfw_dir",
        {
            "type": str,
            "default": "",
            "help": "aligned LFW crops; when set, LFW is evaluated after every epoch",
        },
    ),
    (
        "lfw_nrof_folds",
        {
            "type": int,
            "default": None,
            "help": "LFW cross-validation folds (default: as many as the pairs file's header "
            "declares, else 10)",
        },
    ),
    ("lfw_batch_size", {"type": int, "default": 100, "help": "images per LFW evaluation batch"}),
)


def add_original_options(p: argparse.ArgumentParser) -> None:
    """The options of the original train_tripletloss.py (same names, meaning, defaults)."""
    for name, kwargs in ORIGINAL_OPTIONS:
        _opt(p, name, **kwargs)


FACEWATCH_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "config",
        {
            "type": Path,
            "default": None,
            "help": "YAML recipe giving option values (configs/training/*.yaml)",
        },
    ),
    (
        "run_name",
        {"default": "", "help": "run directory name (default: the start time, YYYYmmdd-HHMMSS)"},
    ),
    (
        "gpu",
        {
            "default": None,
            "help": "CUDA device index, or 'cpu' (default: CUDA 0 when present). Under torchrun: LOCAL_RANK",
        },
    ),
    (
        "resume",
        {
            "default": None,
            "help": "checkpoint file, run directory, or 'auto' (newest run in --models-base-dir)",
        },
    ),
    ("amp", {"action": "store_true", "help": "mixed precision (CUDA only)"}),
    (
        "workers",
        {
            "type": int,
            "default": None,  # default_workers(), when the parser is built
            "help": "data loader worker processes (0: load in the main process); not kept by "
            "--resume (local to this machine)",
        },
    ),
    (
        "loss",
        {
            "default": "triplet",
            "choices": LOSSES,
            "help": "triplet (online selection), center (softmax + center loss) or distill (to --teacher)",
        },
    ),
    (
        "triplet_rule",
        {
            "default": "vggface",
            "choices": RULES,
            "help": "negative selection rule (see training/triplet.py)",
        },
    ),
    (
        "center_loss_factor",
        {"type": float, "default": 0.01, "help": "center loss weight for --loss center"},
    ),
    (
        "center_loss_alfa",
        {"type": float, "default": 0.95, "help": "center update rate for --loss center"},
    ),
    (
        "teacher",
        {
            "type": Path,
            "default": None,
            "help": "for --loss distill: an ONNX embedding model (with sidecar), run beside "
            "the student on each augmented batch (train on crops made for it: `align "
            "--template`), or a .npz of precomputed embeddings (`facewatch train embed`; "
            "see training/teacher.py)",
        },
    ),
    (
        "random_rotate",
        {
            "type": float,
            "default": 0.0,
            "help": "for --loss distill: rotate each crop by up to this many degrees, on the "
            "training device, where teacher and student see the same warped crop (0: off)",
        },
    ),
    (
        "random_scale",
        {
            "type": float,
            "default": 0.0,
            "help": "for --loss distill: scale each crop by a factor in [1 - F, 1 + F] (0: off)",
        },
    ),
    (
        "random_color",
        {
            "type": float,
            "default": 0.0,
            "help": "for --loss distill: change brightness and contrast by up to F (a fraction) "
            "and make a crop grey with probability F / 2 (0: off)",
        },
    ),
    (
        "standardization",
        {
            "default": "fixed",
            "choices": STANDARDIZATIONS,
            "help": "the network's input: fixed: (x-127.5)/128, as facenet-pytorch's published "
            "weights were trained (not the original's); prewhiten: per-image mean/std, as the "
            "original train_tripletloss.py always does",
        },
    ),
    (
        "margin",
        {
            "type": int,
            "default": 32,
            "help": "margin the crops were aligned with (recorded for export)",
        },
    ),
    (
        "keep_checkpoints",
        {"type": int, "default": 3, "help": "epoch-NNNN.pt files kept (latest.pt is always kept)"},
    ),
    (
        "time_limit_min",
        {
            "type": float,
            "default": 0.0,
            "help": "stop after the first epoch that ends past this many minutes (0: no limit)",
        },
    ),
    (
        "lr_anneal",
        {
            "type": str,
            "default": "stairs",
            "choices": ("stairs", "cosine-time"),
            "help": "stairs: the rate decays by --learning-rate-decay-factor every "
            "--learning-rate-decay-epochs (the original's); cosine-time: it falls from the "
            "initial rate to 0 along a cosine over --time-limit-min, so that a run of unknown "
            "speed still ends annealed (a resumed run anneals again over its own limit)",
        },
    ),
    (
        "min_nrof_images_per_class",
        {"type": int, "default": 1, "help": "leave out identities with fewer images"},
    ),
)


def add_facewatch_options(p: argparse.ArgumentParser) -> None:
    for name, kwargs in FACEWATCH_OPTIONS:
        _opt(p, name, **kwargs)


GIVEN = "_given"  # the namespace attribute naming the options the command line gave
FROM_RECIPE = "_recipe_keys"  # option -> its key in the --config recipe, for the recipe's values


def default_workers() -> int:
    """Data loader workers: 4, or one per CPU this process may use where there are fewer."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="facewatch train triplet")
    add_original_options(parser)
    add_facewatch_options(parser)
    parser.set_defaults(workers=default_workers())
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            action.__class__ = _recording(type(action))
    return parser


def _recording(kind: type[argparse.Action]) -> type[argparse.Action]:
    """``kind``, also noting its option as given on the command line (so that a recipe never
    overrides it, even where the command line repeats the default)."""

    class Recording(kind):  # type: ignore[misc]
        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            given = set(getattr(namespace, GIVEN, ()))
            setattr(namespace, GIVEN, given | {self.dest})
            super().__call__(parser, namespace, values, option)

    return Recording


def apply_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill options from ``args.config`` where the command line gave none."""
    given = set(getattr(args, GIVEN, ()))
    if args.config is None:
        return
    path = Path(args.config)
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise OptionError(f"{path}: cannot read recipe: {exc}") from None
    if not isinstance(recipe, dict):
        raise OptionError(f"{path}: a recipe is a mapping of option: value")
    known = {a.dest: a for a in parser._actions}
    from_recipe: dict[str, str] = {}
    for key, value in recipe.items():
        dest = str(key).replace("-", "_")
        if dest not in known or dest in ("config", "help"):
            raise OptionError(f"{path}: unknown option {key!r}")
        if dest in given:
            continue
        given.add(dest)  # a recipe's value, like the command line's, is the user's choice
        action = known[dest]
        if value is None and action.default is not None:  # `image_size:` alone
            raise OptionError(f"{path}: {key}: needs a value")
        if isinstance(action, argparse.BooleanOptionalAction) and not isinstance(value, bool):
            raise OptionError(f"{path}: {key}: {value!r}: an on/off option takes true or false")
        if value is not None and action.type is not None and not isinstance(value, bool):
            try:
                value = action.type(value)
            except (TypeError, ValueError):
                raise OptionError(f"{path}: {key}: {value!r} is not a valid value") from None
        if action.choices is not None and value not in action.choices:
            raise OptionError(f"{path}: {key}: {value!r} is not one of {sorted(action.choices)}")
        setattr(args, dest, value)
        from_recipe[dest] = str(key)
    setattr(args, GIVEN, given)
    setattr(args, FROM_RECIPE, from_recipe)


_RANGES: tuple[tuple[str, str, Any], ...] = (
    ("max_nrof_epochs", "must be >= 1", lambda v: v >= 1),
    ("batch_size", "must be >= 1", lambda v: v >= 1),
    (
        "image_size",
        f"must be >= {MIN_INPUT_SIZE} pixels (Inception-ResNet-v1's smallest input)",
        lambda v: v >= MIN_INPUT_SIZE,
    ),
    ("people_per_batch", "must be >= 2 (negatives come from other people)", lambda v: v >= 2),
    ("images_per_person", "must be >= 2 (positives come from the same person)", lambda v: v >= 2),
    ("epoch_size", "must be >= 1", lambda v: v >= 1),
    ("alpha", "must be > 0", lambda v: v > 0),
    ("embedding_size", "must be >= 1", lambda v: v >= 1),
    ("keep_probability", "must be in (0, 1]", lambda v: 0 < v <= 1),
    ("weight_decay", "must be >= 0", lambda v: v >= 0),
    ("learning_rate_decay_epochs", "must be >= 1", lambda v: v >= 1),
    ("learning_rate_decay_factor", "must be > 0", lambda v: v > 0),
    ("moving_average_decay", "must be in [0, 1)", lambda v: 0 <= v < 1),
    ("lfw_nrof_folds", "must be >= 2", lambda v: v is None or v >= 2),
    ("lfw_batch_size", "must be >= 1", lambda v: v >= 1),
    ("workers", "must be >= 0", lambda v: v >= 0),
    ("center_loss_alfa", "must be in [0, 1]", lambda v: 0 <= v <= 1),
    ("center_loss_factor", "must be >= 0", lambda v: v >= 0),
    ("margin", "must be >= 0", lambda v: v >= 0),
    ("keep_checkpoints", "must be >= 0", lambda v: v >= 0),
    ("min_nrof_images_per_class", "must be >= 1", lambda v: v >= 1),
    ("time_limit_min", "must be >= 0", lambda v: v >= 0),
)


def given_as(args: argparse.Namespace, name: str) -> str:
    """Option ``name`` and its value as the user gave them: ``recipe.yaml: key: value`` for a
    value from the --config recipe, ``--name-with-dashes value``, with "(the default)" when
    neither gave it."""
    value = getattr(args, name)
    key = getattr(args, FROM_RECIPE, {}).get(name)
    if key is not None and args.config is not None:
        return f"{args.config}: {key}: {value}"
    default = "" if name in getattr(args, GIVEN, {name}) else " (the default)"
    return f"--{name.replace('_', '-')} {value}{default}"


def check_options(args: argparse.Namespace) -> None:
    """Raise OptionError naming the first option out of range (or the recipe file and key
    that gave it)."""
    for name, rule, ok in _RANGES:
        if not ok(getattr(args, name)):
            raise OptionError(f"{given_as(args, name)}: {rule}")
    if args.loss == "triplet" and args.batch_size % 3:
        raise OptionError(
            f"{given_as(args, 'batch_size')}: must be a multiple of 3 for --loss triplet "
            "(whole triplets)"
        )
    if args.learning_rate <= 0 and not Path(args.learning_rate_schedule_file).is_file():
        raise OptionError(
            f"{given_as(args, 'learning_rate')} asks for a schedule, but "
            f"{given_as(args, 'learning_rate_schedule_file')} does not exist"
        )
    if args.lr_anneal == "cosine-time" and not args.time_limit_min:
        raise OptionError(
            f"{given_as(args, 'lr_anneal')} needs a time limit (--time-limit-min) to anneal over"
        )
    if args.loss == "distill" and args.teacher is None:
        raise OptionError("--loss distill needs --teacher MODEL.onnx or EMBEDDINGS.npz")
    for key, most in (("random_rotate", 45.0), ("random_scale", 0.5), ("random_color", 1.0)):
        value = getattr(args, key)
        if not 0 <= value <= most:
            raise OptionError(f"{given_as(args, key)}: must be in [0, {most:g}]")
        if value and args.loss != "distill":
            raise OptionError(
                f"{given_as(args, key)} is for --loss distill (where the teacher sees the same "
                "warped crop); the other losses take --random-crop and --random-flip"
            )
        if value and args.teacher is not None and Path(args.teacher).suffix.lower() == ".npz":
            raise OptionError(
                f"{given_as(args, key)} needs an ONNX teacher: a .npz teacher's embeddings are "
                "of the un-warped photos"
            )
    if args.amp and args.gpu is not None and str(args.gpu).lower() == "cpu":
        raise OptionError("--amp needs a CUDA device (mixed precision is CUDA only)")


def options_dict(args: argparse.Namespace) -> dict[str, Any]:
    """JSON-friendly copy of the options (paths as strings, no callables)."""
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if not callable(v) and not k.startswith("_")
    }
