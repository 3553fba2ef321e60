"""What a training run checks before it trains (training/run_setup.py's ``build_run``): what its
loss needs of the data, the crops' own alignment settings, paths that do not depend on the
directory the command runs in, and what ``--resume`` finds in the checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from training.align import SETTINGS_FILE, read_settings
from training.data import ImageClass
from training.train_options import GIVEN, OptionError, given_as

logger = logging.getLogger(__name__)

# Crops larger than this times --image-size: training sees too little of each (the
# original FaceNet aligns at 182 px for 160, 1.14).
LARGEST_CROP_RATIO = 1.25
LARGE_IMAGE_RATIO = 1.5  # sampled images this much larger than --image-size: not crops
SIZE_SAMPLES = 8  # images whose size is read, one per identity

# Options naming files or folders: saved absolute, so that --resume works from anywhere.
PATH_OPTIONS = (
    "logs_base_dir",
    "models_base_dir",
    "pretrained_model",
    "data_dir",
    "learning_rate_schedule_file",
    "lfw_pairs",
    "lfw_dir",
    "teacher",
)


def check_identities(args: argparse.Namespace, dataset: list[ImageClass]) -> None:
    """What the loss needs of the identities, before anything trains: a triplet takes its
    anchor and positive from one person and its negative from another; softmax + center
    classifies the identities. Distillation needs only images."""
    people, with_pairs = len(dataset), sum(len(c.image_paths) >= 2 for c in dataset)
    found = f"{args.data_dir} has {people}" + (f" ({dataset[0].name})" if people == 1 else "")
    if args.loss == "triplet" and with_pairs < 1:
        raise OptionError(
            f"--loss triplet needs identities with 2 or more images (anchor and positive); "
            f"none of the {people} in {args.data_dir} has"
        )
    if args.loss == "triplet" and people < 2:
        raise OptionError(
            "--loss triplet needs at least 2 identities, one with 2 or more images (the "
            f"negative of a triplet is another person); {found}"
        )
    if args.loss == "center" and people < 2:
        raise OptionError(
            f"--loss center needs at least 2 identities (it learns to tell them apart); {found}"
        )
    most = max(len(c.image_paths) for c in dataset)
    over = [
        given_as(args, name)
        for name, limit in (("people_per_batch", people), ("images_per_person", most))
        if args.loss == "triplet" and getattr(args, name) > limit
    ]
    if over:
        logger.warning(
            "%s has %d identities of at most %d images: %s takes fewer (each batch samples "
            "what there is)",
            args.data_dir,
            people,
            most,
            " and ".join(over),
        )


def check_crops(args: argparse.Namespace, dataset: list[ImageClass] | None = None) -> None:
    """The crops' own settings (their alignment.json) against --image-size and --margin.
    The margin recorded for export is the crops' own: a different --margin is a warning.
    Without alignment.json, or with images much larger than --image-size (a few of
    ``dataset`` are read), the folder may hold raw photos: a warning naming `train align`."""
    settings = read_settings(args.data_dir)
    if settings is None:
        logger.warning(
            "--data-dir %s has no %s: its images are taken as aligned face crops, of which "
            "training sees the central %d px (raw photos would train on a patch of each: an "
            "eye, a collar); `facewatch train align %s ALIGNED` makes the crops",
            args.data_dir,
            SETTINGS_FILE,
            args.image_size,
            args.data_dir,
        )
    if dataset:
        _check_image_sizes(args, dataset)
    settings = settings or {}
    crops, margin = settings.get("image_size"), settings.get("margin")
    _check_crop_size(args, crops)
    _check_framing(args, settings)
    if not isinstance(margin, int) or margin == args.margin:
        return
    # (crops warped onto landmarks are framed by them: their margin is only room to crop)
    if "margin" in getattr(args, GIVEN, set()) and settings.get("alignment") != "similarity":
        logger.warning(
            "%s differs from the margin the crops were aligned with (%s says %d): using %d, "
            "the crops' own, which the exported model must crop faces with; re-align with "
            "`facewatch train align --margin %d` for that margin",
            given_as(args, "margin"),
            Path(args.data_dir) / SETTINGS_FILE,
            margin,
            margin,
            args.margin,
        )
    args.margin = margin


def _check_crop_size(args: argparse.Namespace, crops: Any) -> None:
    """Warn when the crops' size (alignment.json's) is smaller than --image-size, or so much
    larger that training sees only their centre."""
    if isinstance(crops, int) and crops < args.image_size:
        logger.warning(
            "%s holds %d px crops: --image-size %d enlarges them (and --random-crop has "
            "nothing to crop); align at a larger --image-size",
            args.data_dir,
            crops,
            args.image_size,
        )
    if isinstance(crops, int) and crops > LARGEST_CROP_RATIO * args.image_size:
        logger.warning(
            "%s holds %d px crops: --image-size %d trains on their central %d px only (%.0f %% "
            "of the face's crop), while the exported model will be given whole crops; align at "
            "about %d px for %d (the original: 182 for 160), or raise --image-size",
            args.data_dir,
            crops,
            args.image_size,
            args.image_size,
            100 * args.image_size / crops,
            round(1.14 * args.image_size),
            args.image_size,
        )


def _check_image_sizes(args: argparse.Namespace, dataset: list[ImageClass]) -> None:
    """Warn when images of the dataset (the first of a few identities) are much larger than
    --image-size: training crops their centre, never resizes them, so a photo gives a patch."""
    import cv2

    sizes = []
    for identity in dataset[:: max(1, len(dataset) // SIZE_SAMPLES)][:SIZE_SAMPLES]:
        image = cv2.imread(str(identity.image_paths[0]), cv2.IMREAD_REDUCED_GRAYSCALE_2)
        if image is not None:  # (unreadable ones are the loader's to report)
            sizes.append(2 * min(image.shape[:2]))
    if not sizes:
        return
    smallest = min(sizes)
    if smallest > LARGE_IMAGE_RATIO * args.image_size:
        logger.warning(
            "--data-dir %s: its images are %d px or more on their short side (%d of them "
            "read), over %.1fx --image-size %d: training crops their central %d px and never "
            "resizes them, so it sees %.0f %% of each or less. Are they photos rather than "
            "face crops? `facewatch train align` makes crops (its --image-size about 1.14x "
            "the training's)",
            args.data_dir,
            smallest,
            len(sizes),
            LARGE_IMAGE_RATIO,
            args.image_size,
            args.image_size,
            100 * (args.image_size / smallest) ** 2,
        )


def _check_framing(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    """Folders of crops whose framing a run cannot know: an --lfw-dir without alignment.json
    (raw photos are only resized), distillation on crops not warped onto a template."""
    if args.lfw_dir and read_settings(args.lfw_dir) is None:
        logger.warning(
            "--lfw-dir %s has no %s: the per-epoch LFW check takes its images as aligned "
            "crops (raw photos are only resized); `facewatch train align` makes them",
            args.lfw_dir,
            SETTINGS_FILE,
        )
    if args.loss == "distill" and settings and settings.get("landmarks") is None:
        logger.warning(
            "%s: crops with a margin, not warped onto a teacher's landmark template: the "
            "student learns the teacher's descriptors of faces framed otherwise than the "
            "teacher frames them; `facewatch train align --template TEACHER.onnx` makes crops "
            "in its framing",
            args.data_dir,
        )


def absolute_paths(args: argparse.Namespace, keep: frozenset[str] = frozenset()) -> None:
    """Make the path options absolute (against the current directory), but those in ``keep``."""
    for name in PATH_OPTIONS:
        value = getattr(args, name)
        if name in keep or value is None or value == "":
            continue
        path = Path(value).expanduser().absolute()
        setattr(args, name, str(path) if isinstance(value, str) else path)


def resumed_paths(
    args: argparse.Namespace, saved: dict[str, Any], adopted: set[str], source: Path
) -> frozenset[str]:
    """``--resume`` of a run an older facewatch saved with relative paths: the models base
    is the run directory's parent. Resumed from the directory the run was started in (its
    saved models base, from here, is the run's parent), the relative paths are taken from
    here; otherwise those the run needs are refused (relative to a directory no longer known),
    unless given again, but for the event logs (see ``_relative_logs``). Returns the relative
    ones left as saved (the run does not use them)."""
    relative = {
        name
        for name in adopted & set(PATH_OPTIONS)
        if getattr(args, name) not in (None, "")
        and not Path(getattr(args, name)).expanduser().is_absolute()
    }
    run_base = source.absolute().parent.parent
    if "models_base_dir" in relative:
        args.models_base_dir = run_base
        relative.discard("models_base_dir")
    saved_base = Path(str(saved.get("models_base_dir") or "")).expanduser()
    if relative and not saved_base.is_absolute() and saved_base.resolve() == run_base.resolve():
        logger.info(
            "%s: the run saved relative paths (%s); resumed from the directory it was started "
            "in (%s), they are taken from here",
            source,
            ", ".join(f"{name} {str(getattr(args, name))!r}" for name in sorted(relative)),
            Path.cwd(),
        )
        return frozenset()
    needed = {"data_dir"}
    if args.lfw_dir:
        needed |= {"lfw_dir", "lfw_pairs"}
    if args.learning_rate <= 0:
        needed.add("learning_rate_schedule_file")
    if args.loss == "distill":
        needed.add("teacher")
    refused = sorted(relative & needed)
    if refused:
        shown = ", ".join(f"{name} {str(getattr(args, name))!r}" for name in refused)
        flags = " ".join(f"--{name.replace('_', '-')} PATH" for name in refused)
        raise OptionError(
            f"{source}: the run saved relative paths ({shown}), relative to the directory it "
            f"was started from, which the checkpoint does not record: resume from there, or "
            f"give them again ({flags})"
        )
    if "logs_base_dir" in relative:
        _relative_logs(args, saved_base, run_base, source)
        relative.discard("logs_base_dir")
    return frozenset(relative)


def _relative_logs(
    args: argparse.Namespace, saved_base: Path, run_base: Path, source: Path
) -> None:
    """A relative logs_base_dir saved by an older facewatch (event logs only: not a reason to
    refuse). When the saved models base was relative too and the run's models base ends with
    it, the run was started in the folder above: the logs go where they went. Otherwise no
    event logs (``args.logs_base_dir`` None), rather than a folder of a guessed place."""
    saved_logs = str(args.logs_base_dir)
    parts = saved_base.parts
    relative = bool(parts) and not saved_base.is_absolute() and ".." not in parts
    if relative and run_base.parts[-len(parts) :] == parts:
        args.logs_base_dir = Path(*run_base.parts[: -len(parts)]) / saved_logs
        logger.warning(
            "%s: the run saved a relative logs_base_dir %r; event logs go to %s (--logs-base-dir "
            "chooses another)",
            source,
            saved_logs,
            args.logs_base_dir,
        )
        return
    args.logs_base_dir = None
    logger.warning(
        "%s: the run saved a relative logs_base_dir %r, relative to a directory the checkpoint "
        "does not record: no event logs for this run (--logs-base-dir PATH writes them)",
        source,
        saved_logs,
    )


class NothingToDo(Exception):
    """A resumed run has already trained every epoch asked for (not a failure: exit 0)."""


def check_resume(args: argparse.Namespace, epoch: int, source: Path) -> None:
    """A resumed run that has already trained its epochs is told so, not silently done."""
    if epoch >= args.max_nrof_epochs:
        raise NothingToDo(
            f"nothing to do: run {source.parent} already trained {epoch} epochs "
            f"(--max-nrof-epochs {args.max_nrof_epochs}); raise --max-nrof-epochs to train on"
        )
