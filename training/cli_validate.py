"""`facewatch train validate`: the LFW protocol on a checkpoint, a facenet-pytorch state dict
or an ONNX model (training/validate.py does the work)."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from engines.loader import default_models_dir
from training.choices import count
from training.cli_args import argv_after, run_checkpoint
from training.cli_teacher import fail
from training.help_format import NO_PROGRESS_HELP, DefaultsHelpFormatter

logger = logging.getLogger(__name__)


def register_validate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `validate` to the `facewatch train` sub-parsers."""
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
    _data_options(p)
    _embedding_options(p)
    p.add_argument("--out-dir", type=Path, default=None, help="write lfw.json and roc.png here")
    p.add_argument(
        "--record",
        action="store_true",
        help="ONNX models: write the figures into the model's sidecar and model card",
    )
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(func=_validate)


def _data_options(p: argparse.ArgumentParser) -> None:
    """The LFW images and pairs, and whether the images are aligned first."""
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
        type=count(2),
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


def _embedding_options(p: argparse.ArgumentParser) -> None:
    """How the images are embedded and the distances taken."""
    p.add_argument(
        "--batch-size",
        "--lfw-batch-size",
        "--lfw_batch_size",
        dest="batch_size",
        type=count(1),
        default=100,
        help="images per embedding batch",
    )
    p.add_argument(
        "--threads", type=count(0), default=0, help="ONNX Runtime threads (0: automatic)"
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

    args.model = run_checkpoint(args.model)
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
        figures["command"] = "facewatch train validate " + shlex.join(argv_after("validate"))
        record_lfw(args.model, figures)
        print(f"recorded in {args.model.with_suffix('.json')} and {args.model.with_suffix('.md')}")
    return 0
