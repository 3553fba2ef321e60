"""Options of `facewatch train triplet`: the original ``train_tripletloss.py`` options with
the same meaning and defaults (``--max-nrof-epochs`` and ``--max_nrof_epochs`` both work),
plus facewatch's: --gpu, --resume, --amp, --workers, --loss, --teacher, --config (each declared
in training/train_option_defs.py).

A YAML recipe (``--config``) gives values for any option (keys with - or _); an option given
on the command line wins over the recipe, even when it repeats the built-in default.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from training.choices import MIN_INPUT_SIZE
from training.train_option_defs import add_facewatch_options, add_original_options


class OptionError(ValueError):
    """An option value out of range; the message names the option."""


GIVEN = "_given"  # the namespace attribute naming the options the command line gave
GIVEN_AS = "_given_as"  # and the one holding them as given: (dest, option string, value)
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
    overrides it, even where the command line repeats the default), and how it was given (so
    that --nproc-per-node's processes can be given the same command)."""

    class Recording(kind):  # type: ignore[misc]
        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            given = set(getattr(namespace, GIVEN, ()))
            setattr(namespace, GIVEN, given | {self.dest})
            given_as = list(getattr(namespace, GIVEN_AS, ()))
            setattr(namespace, GIVEN_AS, [*given_as, (self.dest, option, values)])
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


def command_line(args: argparse.Namespace, leave_out: str) -> list[str]:
    """The options the command line gave, as it gave them (each under its full name), but
    ``leave_out``'s."""
    words: list[str] = []
    for dest, option, value in getattr(args, GIVEN_AS, ()):
        if dest != leave_out:  # a flag's value is None or [], an option's one value
            values = value if isinstance(value, list) else [] if value is None else [value]
            words += [option, *map(str, values)]
    return words


def options_dict(args: argparse.Namespace) -> dict[str, Any]:
    """JSON-friendly copy of the options (paths as strings, no callables)."""
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if not callable(v) and not k.startswith("_")
    }
