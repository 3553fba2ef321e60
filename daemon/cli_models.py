"""What `identify` and `enroll` (daemon/identify_cli.py, daemon/enroll_cli.py) share in
their input: the models that detect and embed faces (``load_models``, with the options of
``add_model_options``; with --config on the daemon's engines, ``daemon.engine_choice``), and
the photos of the folders given (``photo_files``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from daemon import gallery_choice
from daemon.archive_files import VISIT_FILE
from daemon.cli_args import number
from daemon.config import Config
from daemon.engine_choice import EngineChoice
from engines import BACKENDS, EngineError
from engines.facenet import FaceNet
from engines.image_files import PHOTO_SUFFIXES, folder_files
from engines.images import shown
from engines.loader import (
    PRECISIONS,
    THREAD_BOUNDS,
    cpu_threads,
    default_facenet,
    default_models_dir,
)
from engines.mtcnn import MTCNN

# the name it logged under in daemon/identify_cli.py, kept: the log lines name it
logger = logging.getLogger("daemon.identify_cli")

NO_DEFAULT_MODEL = (
    "the model facewatch ships is missing there (models/facenet/ of a checkout: dlib's ResNet, "
    "made again by facewatch train import-dlib --out {path}). Export one there from "
    "facenet-pytorch's published weights (facewatch train export 20180402-114759-vggface2.pt "
    "--out {path}) or "
    "from your own training run (facewatch train export RUN_DIR/latest.pt --out {path}), "
    "or pass --model PATH to a FaceNet .onnx with its .json sidecar, or --config FILE to use "
    "the daemon's recognition.model"
)


def default_model_path() -> Path:
    """models/facenet/facenet.onnx under $FACEWATCH_MODELS or the repository's models/."""
    return default_facenet()


def add_model_options(p: argparse.ArgumentParser) -> None:
    gallery_choice.add_gallery_option(p)
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"FaceNet .onnx with its .json sidecar (default: {default_model_path()})",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="engine backend, as the daemon's engines.backend: MTCNN runs on it, FaceNet too "
        "on tensorrt and torch, on ONNX Runtime beside a CPU backend (default: openvino; "
        "--config: its engines.backend)",
    )
    p.add_argument(
        "--threads",
        type=number(int, **THREAD_BOUNDS),
        default=None,
        help="CPU threads (0: all the cores it may use; default 0, --config: its engines.threads)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default=None,
        help="bf16: FaceNet on OpenVINO in bf16, about 2x faster on CPUs with native bf16 "
        "(AVX512_BF16, AMX), same gallery as fp32; auto (default; --config: its "
        "recognition.precision): bf16 where the CPU has it",
    )
    p.add_argument(
        "--flip",
        action="store_true",
        help="average each face's embedding with its mirror image's (a gallery remembers "
        "this: enroll and identify must agree). Faces then lie nearer each other, so the "
        "threshold a new gallery starts at, the model's measured without flip, names more "
        "strangers: run `facewatch gallery calibrate` on a flip gallery",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass
class Models:
    detector: MTCNN
    facenet: FaceNet


def load_models(args: argparse.Namespace) -> Models:
    """The detector and the FaceNet model, or EngineError with what to do. With --config the
    daemon's: its model, flip and engines (``EngineChoice.of_config``)."""
    config = gallery_choice.daemon_config(args)  # --config: the daemon's models
    if config is None:
        model, choice = args.model, _choice_of_args(args)
    else:
        model, choice = _configured_model(args, config), _choice_of_config(args, config)
    path = model or default_model_path()
    if not path.is_file() and model is None:
        raise EngineError(f"{path}: no FaceNet model. " + NO_DEFAULT_MODEL.format(path=path))
    facenet = choice.facenet(path)
    models = Models(choice.detector(), facenet)
    logger.info("%s", choice.said(facenet))
    return models


def _choice_of_args(args: argparse.Namespace) -> EngineChoice:
    """The engines the options ask for (the shipped MTCNN, or $FACEWATCH_MODELS')."""
    return EngineChoice(
        default_models_dir() / "mtcnn",
        backend=args.backend or "openvino",
        threads=cpu_threads(args.threads or 0),
        precision=args.precision or "auto",
        flip=args.flip,
    )


def _configured_model(args: argparse.Namespace, config: Config) -> Path | None:
    """--config's recognition.model (None: the shipped one's place); EngineError for a
    --model or --flip beside it that the daemon would refuse, or a null model."""
    recognition = config.recognition
    if args.model is not None or (args.flip and not recognition.flip):
        raise EngineError(
            f"--config {args.config} gives the model and flip the daemon uses: --model "
            "and --flip would make a gallery it refuses; drop them (or --config)"
        )
    if recognition.model is None:
        raise EngineError(f"{args.config}: recognition.model is null (detection only)")
    return None if recognition.model == "auto" else Path(recognition.model)


def _choice_of_config(args: argparse.Namespace, config: Config) -> EngineChoice:
    """The daemon's engines for --config; EngineError for a --backend or --precision beside
    it that asks for others (--threads, which changes only the speed, is taken)."""
    asked = {
        "--backend": (args.backend, "engines.backend", config.engines.backend),
        "--precision": (args.precision, "recognition.precision", config.recognition.precision),
    }
    for option, (value, key, configured) in asked.items():
        if value is not None and value != configured:
            raise EngineError(
                f"--config {args.config} gives the engines the daemon runs: {option} {value} "
                f"would run others than its {key} {configured}; drop {option} (or --config)"
            )
    return EngineChoice.of_config(config, args.config, threads=args.threads)


def photo_files(path: Path, suffixes: frozenset[str] = PHOTO_SUFFIXES) -> list[Path]:
    """A file as given; a folder's photos (or files of other ``suffixes``) at any depth (as
    ``engines.image_files`` walks it), sorted, with a note of the files left out by their
    extension. A folder without any is kept, to be reported as a rejected image."""
    if not path.is_dir():
        return [path]
    walk = folder_files(path, suffixes)
    walk.left_out = [p for p in walk.left_out if p.name != VISIT_FILE]  # a face archive visit's
    note = walk.note(path)
    if note:
        tqdm.write(f"note: {shown(note)}", file=sys.stderr)
    return walk.files or [path]
