"""`facewatch train align | triplet | validate | export`: the FaceNet workflow, and the
teacher commands of training/cli_teacher.py.

``register_facenet(commands)`` adds them to the `facewatch train` group (training/cli.py);
``python -m training.cli_facenet`` runs them without the daemon's CLI (torchrun, .venv-dlib).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from engines.loader import default_facenet, default_models_dir
from engines.mtcnn import MTCNNConfig
from training.cli_teacher import fail, register_teacher
from training.help_format import NO_PROGRESS_HELP, DefaultsHelpFormatter

logger = logging.getLogger(__name__)


def register_facenet(commands: argparse._SubParsersAction) -> None:
    """Add the FaceNet subcommands to the `facewatch train` sub-parsers."""
    _add_align(commands)
    _add_triplet(commands)
    _add_validate(commands)
    _add_export(commands)
    register_teacher(commands)


def _count(least: int) -> object:
    """An argparse type: an integer of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {least}")
        return value

    return parse


def _true_or_false(text: str) -> bool:
    """An argparse type: the value of one of the original's ``type=bool`` options. Taken as
    written (the original's bool("False") was True)."""
    word = text.strip().lower()
    if word in ("true", "1", "yes"):
        return True
    if word in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(
        f"{text!r} is not True or False (--detect-multiple-faces is the flag without a value)"
    )


def _add_align(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "align",
        formatter_class=DefaultsHelpFormatter,
        help="align a folder-per-identity dataset with MTCNN (align_dataset_mtcnn)",
        description="Detect faces with MTCNN and write aligned crops, one folder per identity. "
        "Resumable: outputs that exist are skipped. For LFW use --image-size 160 --margin 32; "
        "for training data the original project used 182 / 44 and --random-crop 160.",
    )
    p.add_argument("input_dir", type=Path, help="unaligned images, <identity>/<image>")
    p.add_argument("output_dir", type=Path, help="where the aligned crops go")
    p.add_argument(
        "--image-size",
        "--image_size",
        dest="image_size",
        type=int,
        default=182,
        help="crop size in pixels",
    )
    p.add_argument(
        "--margin", type=int, default=44, help="pixels added around the box (half on each side)"
    )
    p.add_argument(
        "--random-order",
        "--random_order",
        dest="random_order",
        action="store_true",
        help="shuffle the identities (several aligners can share one dataset)",
    )
    p.add_argument(
        "--detect-multiple-faces",
        dest="detect_multiple_faces",
        action="store_true",
        help="write every face, not only the main one",
    )
    p.add_argument(  # the original's type=bool option, which scripts give a value
        "--detect_multiple_faces",
        dest="detect_multiple_faces",
        nargs="?",
        const=True,
        default=argparse.SUPPRESS,
        type=_true_or_false,
        metavar="True|False",
        help="the original's spelling: --detect_multiple_faces True (or 1) is "
        "--detect-multiple-faces; False (or 0) is off",
    )
    p.add_argument(
        "--alignment",
        choices=("margin", "similarity"),
        default="margin",
        help="margin crop (FaceNet) or 5-point similarity warp",
    )
    p.add_argument(
        "--template",
        type=Path,
        default=None,
        metavar="MODEL.onnx",
        help="warp the 5 landmarks onto MODEL's own template (its sidecar's landmarks), "
        "scaled to image-size minus margin and centred: crops for a student distilled from "
        "MODEL (--loss distill --teacher MODEL.onnx; the margin leaves room for random "
        "crops). Implies --alignment similarity",
    )
    p.add_argument(
        "--mtcnn-dir", type=Path, default=default_models_dir() / "mtcnn", help="MTCNN models"
    )
    p.add_argument(
        "--min-face-size",
        type=float,
        default=MTCNNConfig.min_face_size,
        help="smallest face to detect (pixels)",
    )
    p.add_argument(
        "--threads", type=_count(0), default=0, help="ONNX Runtime threads (0: automatic)"
    )
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="output image format")
    p.add_argument(
        "--gpu-memory-fraction",
        "--gpu_memory_fraction",
        type=float,
        default=None,
        help="accepted for compatibility with the original's scripts and ignored",
    )
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality with --format jpg")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(func=_align)


def _align(args: argparse.Namespace) -> int:
    from engines.base import EngineError
    from training.align import AlignOptions, align_dataset, chip_template
    from training.data import DataError

    try:
        landmarks = None
        if args.template is not None:
            landmarks = chip_template(args.template, args.image_size, args.margin)
        opts = AlignOptions(
            image_size=args.image_size,
            margin=args.margin,
            random_order=args.random_order,
            detect_multiple_faces=args.detect_multiple_faces,
            alignment="similarity" if landmarks is not None else args.alignment,
            landmarks=landmarks,
            min_face_size=args.min_face_size,
            threads=args.threads,
            image_format=args.format,
            jpeg_quality=args.jpeg_quality,
        )
        summary = align_dataset(
            args.input_dir, args.output_dir, opts, args.mtcnn_dir, progress=not args.no_progress
        )
    except (DataError, ValueError, EngineError) as exc:
        return fail(str(exc))
    print(summary.text())
    print(f"crops in {args.output_dir} (train on them: facewatch train triplet --data-dir ...)")
    return 0


def _add_triplet(commands: argparse._SubParsersAction) -> None:
    from training.train_options import build_parser

    p = commands.add_parser(
        "triplet",
        formatter_class=DefaultsHelpFormatter,
        aliases=["facenet"],
        help="train FaceNet (triplet loss; --loss center / distill)",
        description="Train Inception-ResNet-v1 with the options of the original "
        "train_tripletloss.py. Multi-GPU: torchrun --nproc-per-node N -m training.cli_facenet "
        "triplet ...",
    )
    build_parser(p)
    p.set_defaults(func=_triplet, _parser=p)


def _triplet(args: argparse.Namespace) -> int:
    from engines.base import EngineError
    from training.data import DataError
    from training.facenet_nets import ModelFileError
    from training.run_checks import NothingToDo
    from training.train import TrainingInterrupted, train
    from training.train_options import OptionError, apply_config

    parser = args._parser
    del args._parser, args.func
    try:
        apply_config(args, parser)
        model_dir = train(args)
    except (OptionError, DataError, ModelFileError, FileNotFoundError, EngineError) as exc:
        return fail(_without_worker_traceback(str(exc)))
    except ValueError as exc:  # ours name the file or option; the traceback, if it is a bug
        logger.debug("details", exc_info=True)
        return fail(f"{exc} (facewatch --log-level DEBUG train ... shows where)")
    except TrainingInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":
            print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except NothingToDo as exc:  # a script that resumes until done may run it once more
        if os.environ.get("RANK", "0") == "0":
            print(str(exc), file=sys.stderr)
        return 0
    if os.environ.get("RANK", "0") == "0":
        print(f"checkpoints: {model_dir}")
        print(f"next: facewatch train validate {model_dir} --align --lfw-dir ... --lfw-pairs ...")
        print(f"      facewatch train export {model_dir} --out MODEL.onnx")
    return 0


def _add_validate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "validate",
        formatter_class=DefaultsHelpFormatter,
        help="LFW protocol on a checkpoint, a facenet-pytorch state dict or an ONNX model",
        description="10-fold accuracy ± std, VAL@FAR=1e-3, AUC, EER, best threshold, ROC plot.",
    )
    p.add_argument(
        "model",
        type=Path,
        help="checkpoint or facenet-pytorch state dict (.pt), ONNX model (.onnx with sidecar), "
        "or a run's folder (its latest.pt)",
    )
    p.add_argument(
        "--lfw-dir",
        "--lfw_dir",
        dest="lfw_dir",
        type=Path,
        required=True,
        help="LFW images (aligned crops, or raw with --align)",
    )
    p.add_argument(
        "--lfw-pairs", "--lfw_pairs", dest="lfw_pairs", type=Path, required=True, help="pairs.txt"
    )
    p.add_argument(
        "--lfw-nrof-folds",
        "--lfw_nrof_folds",
        dest="lfw_nrof_folds",
        type=_count(2),
        default=None,
        help="folds (default: as many as the pairs file's header declares, else 10: the LFW "
        "protocol's pairs.txt says 10 300)",
    )
    p.add_argument(
        "--align", action="store_true", help="the images are raw: align them on the fly with MTCNN"
    )
    p.add_argument(
        "--mtcnn-dir",
        type=Path,
        default=default_models_dir() / "mtcnn",
        help="MTCNN models for --align",
    )
    p.add_argument(
        "--batch-size",
        "--lfw-batch-size",
        "--lfw_batch_size",
        dest="batch_size",
        type=_count(1),
        default=100,
        help="images per embedding batch",
    )
    p.add_argument(
        "--threads", type=_count(0), default=0, help="ONNX Runtime threads (0: automatic)"
    )
    p.add_argument(
        "--distance-metric",
        "--distance_metric",
        dest="distance_metric",
        type=int,
        choices=(0, 1),
        default=0,
        help="as the original: 0 squared euclidean, 1 angular (angle / pi)",
    )
    p.add_argument(
        "--use-flipped-images",
        "--use_flipped_images",
        dest="use_flipped_images",
        action="store_true",
        help="embed each image and its mirror, concatenated (as the original)",
    )
    p.add_argument(
        "--subtract-mean",
        "--subtract_mean",
        dest="subtract_mean",
        action="store_true",
        help="take the mean embedding away before the distances (as the original; it changes "
        "only the angular metric's distances)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="ONNX models: bf16 runs them on OpenVINO in bf16, as the daemon's "
        "recognition.precision: bf16 does (CPUs with native bf16)",
    )
    p.add_argument("--out-dir", type=Path, default=None, help="write lfw.json and roc.png here")
    p.add_argument(
        "--record",
        action="store_true",
        help="ONNX models: write the figures into the model's sidecar and model card",
    )
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(func=_validate)


def _run_checkpoint(path: Path) -> Path:
    """A run's folder (what `train triplet` ends by naming) stands for its latest.pt."""
    from training.checkpoint import LATEST

    if path.is_dir() and (path / LATEST).is_file():
        logger.info("%s: a run's folder: its %s", path, LATEST)
        return path / LATEST
    return path


def _without_worker_traceback(message: str) -> str:
    """A data loader worker's error as PyTorch passes it on ("Caught DataError in DataLoader
    worker process 1. Original Traceback ...: training.data.DataError: MESSAGE"): MESSAGE."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split("Error: ", 1)[-1]


def run_validate(args: argparse.Namespace) -> tuple[object, int]:
    from training.align import SETTINGS_FILE, read_settings
    from training.embedders import load_embedder
    from training.validate import MtcnnAligner, evaluate_pairs

    if args.lfw_nrof_folds is not None and args.lfw_nrof_folds < 2:
        raise ValueError(f"--lfw-nrof-folds {args.lfw_nrof_folds}: must be >= 2")
    embedder = load_embedder(args.model, threads=args.threads, precision=args.precision)
    aligner = None
    if not args.align and read_settings(args.lfw_dir) is None:
        logger.warning(
            "--lfw-dir %s has no %s: its images are taken as aligned crops (raw photos are "
            "only resized, and the figures mean little); --align aligns raw LFW photos the "
            "way the model frames faces",
            args.lfw_dir,
            SETTINGS_FILE,
        )
    if args.align:
        aligner = MtcnnAligner(
            args.mtcnn_dir,
            embedder.image_size,
            embedder.alignment,
            getattr(embedder, "margin", 32),
            args.threads,
            getattr(embedder, "template", None),
        )
    return evaluate_pairs(
        embedder,
        args.lfw_pairs,
        args.lfw_dir,
        args.lfw_nrof_folds,
        args.batch_size,
        aligner,
        args.distance_metric,
        args.subtract_mean,
        args.use_flipped_images,
        progress=not args.no_progress,
    )


def _validate(args: argparse.Namespace) -> int:
    from engines import EngineError
    from training.data import DataError
    from training.validate import write_report

    args.model = _run_checkpoint(args.model)
    if args.record and args.model.suffix.lower() != ".onnx":
        return fail("--record needs an ONNX model (checkpoints keep their figures in extra)")
    try:
        result, no_face = run_validate(args)
    except (DataError, ValueError, FileNotFoundError, EngineError) as exc:
        return fail(str(exc))
    print(f"{args.model}: {result.summary()}")  # type: ignore[attr-defined]
    if no_face:
        print(f"{no_face} image(s) without a detected face were centre-cropped")
    if args.out_dir is not None:
        paths = write_report(result, no_face, args.out_dir, str(args.model), str(args.lfw_pairs))
        print(f"report: {paths['json']}, ROC: {paths['roc']}")
    if args.record:
        from training.export_facenet import record_lfw

        figures = {**result.to_json(), "images_without_face": no_face, "pairs": str(args.lfw_pairs)}  # type: ignore[attr-defined]
        figures["command"] = "facewatch train validate " + shlex.join(_argv_after("validate"))
        record_lfw(args.model, figures)
        print(f"recorded in {args.model.with_suffix('.json')} and {args.model.with_suffix('.md')}")
    return 0


def _argv_after(command: str) -> list[str]:
    return sys.argv[sys.argv.index(command) + 1 :] if command in sys.argv else []


def _add_export(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        formatter_class=DefaultsHelpFormatter,
        help="checkpoint or facenet-pytorch state dict -> ONNX embedding model + sidecar + "
        "model card, with a parity check",
        description="Export a training checkpoint, or a facenet-pytorch InceptionResnetV1 state "
        "dict (e.g. its published 20180402-114759-vggface2.pt: 160 px crops, margin 32, "
        "(x - 127.5) / 128, as those weights were trained), to the ONNX model the daemon runs.",
    )
    p.add_argument(
        "checkpoint",
        type=Path,
        help="training checkpoint (latest.pt or epoch-NNNN.pt), a run's folder (its latest.pt), "
        "or facenet-pytorch state dict",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=default_facenet(),
        help="ONNX file to write; the default is the FaceNet that the daemon (model: auto) and "
        "the commands without --model use: facenet/facenet.onnx in $FACEWATCH_MODELS, else in "
        "the repository's models/",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a model already at --out (galleries enrolled with it are then refused); "
        "the one replaced is kept under replaced/ beside it",
    )
    p.add_argument(
        "--even-if-worse",
        action="store_true",
        help="with --force: replace the model at --out even when its recorded LFW accuracy is "
        "clearly higher than this one's (by more than 1 point, or its std over the folds when "
        "larger), or was measured on more pairs",
    )
    p.add_argument("--name", default="facenet", help="model name in the sidecar")
    p.add_argument(
        "--parity-images",
        type=Path,
        default=None,
        help="folder (searched recursively) of face crops for the ONNX Runtime vs PyTorch check",
    )
    p.add_argument(
        "--parity-count", type=_count(1), default=16, help="crops used for the parity check"
    )
    p.add_argument(
        "--lfw-report",
        type=Path,
        default=None,
        help="lfw.json from `validate --out-dir` to record in the sidecar and card",
    )
    p.add_argument("--fp16", action="store_true", help="store weights as fp16 (half the size)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantise to int8 (2-3.5x faster on CPUs with VNNI: bench/README.md), calibrated "
        "on half of the --parity-images crops and checked on the other half (min cosine 0.98 "
        "to fp32); give it a few hundred crops with --parity-count",
    )
    p.add_argument(
        "--torch-program",
        action="store_true",
        help="also write the torch.export program (.pt2) beside the ONNX, checked against it, "
        "for `engines.backend: torch` (GPU boxes without TensorRT)",
    )
    p.add_argument(
        "--training-data", default=None, help="describe the training data in the sidecar and card"
    )
    p.add_argument(
        "--license",
        default="",
        help="the model's licence and any terms its training data imposes (sidecar and card)",
    )
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:

    from training.checkpoint import load_model_file
    from training.data import DataError
    from training.export_facenet import export_checkpoint
    from training.export_inputs import lfw_report, parity_crops
    from training.export_staging import out_refused

    args.checkpoint = _run_checkpoint(args.checkpoint)
    refused = out_refused(args.out, args.force)
    if refused:
        return fail(refused)
    if args.int8 and args.parity_images is None:
        return fail("--int8 needs --parity-images: face crops to calibrate the quantisation on")
    try:
        checkpoint = load_model_file(args.checkpoint)
        size = int(checkpoint.options["image_size"])
        crops = parity_crops(args.parity_images, args.parity_count, size)
        lfw = lfw_report(args.lfw_report, args.checkpoint) if args.lfw_report else None
        tail = _argv_after("export") or [str(args.checkpoint)]
        command = "facewatch train export " + shlex.join(tail)
        path, diff = export_checkpoint(
            checkpoint,
            args.out,
            crops,
            args.name,
            lfw,
            args.fp16,
            command,
            args.training_data,
            args.license,
            args.int8,
            args.torch_program,
            args.even_if_worse,
        )
    except OSError as exc:
        if exc.errno is None:  # ours, naming its file (a checkpoint or images not found)
            return fail(str(exc))
        where = f" ({exc.filename})" if exc.filename else ""  # the system's: writing --out
        return fail(f"--out {args.out}: {exc.strerror or exc}{where}")
    except (DataError, ValueError, RuntimeError) as exc:
        return fail(str(exc))
    print(f"wrote {path} (+ sidecar, model card); ONNX Runtime vs PyTorch max abs diff {diff:.2e}")
    if args.parity_images is not None:  # faces of several people, not random pixels
        from training.export_facenet import warn_collapsed

        warn_collapsed(path, crops)
    if args.int8:
        from engines.base import ModelMetadata

        cosine = ModelMetadata.load(path).extra["int8_min_cosine"]
        print(f"quantised to int8: lowest cosine to the fp32 embeddings {cosine:.4f}")
    if Path(path).resolve() == default_facenet().resolve():
        print("the daemon (recognition.model: auto), enroll and identify use it from now on")
    else:
        print(f"use it: facewatch enroll --model {path} ..., recognition.model: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry for ``torchrun -m training.cli_facenet triplet ...`` (multi-process training)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.cli_facenet")
    register_facenet(parser.add_subparsers(dest="train_command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
