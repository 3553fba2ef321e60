"""`facewatch train align | triplet | validate | export`: the FaceNet workflow (validate in
training/cli_validate.py, export in training/cli_export.py), and the teacher commands of
training/cli_teacher.py.

``register_facenet(commands)`` adds them to the `facewatch train` group (training/cli.py);
``python -m training.cli_facenet`` runs them without the daemon's CLI (torchrun, .venv-dlib).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from engines.loader import default_models_dir
from engines.mtcnn import MTCNNConfig
from training.choices import count
from training.cli_export import register_export
from training.cli_teacher import fail, register_teacher
from training.cli_validate import register_validate
from training.help_format import NO_PROGRESS_HELP, DefaultsHelpFormatter

logger = logging.getLogger(__name__)


def register_facenet(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the FaceNet subcommands to the `facewatch train` sub-parsers."""
    _add_align(commands)
    _add_triplet(commands)
    register_validate(commands)
    register_export(commands)
    register_teacher(commands)


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


def _add_align(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _crop_options(p)
    _detector_options(p)
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


def _crop_options(p: argparse.ArgumentParser) -> None:
    """The crops: their size and margin, and which faces of which identities get one."""
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


def _detector_options(p: argparse.ArgumentParser) -> None:
    """How the faces are aligned, and the MTCNN that finds them."""
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
        "--threads", type=count(0), default=0, help="ONNX Runtime threads (0: automatic)"
    )


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


def _add_triplet(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.train_options import build_parser

    p = commands.add_parser(
        "triplet",
        formatter_class=DefaultsHelpFormatter,
        aliases=["facenet"],
        help="train FaceNet (triplet loss; --loss center / distill)",
        description="Train Inception-ResNet-v1 with the options of the original "
        "train_tripletloss.py. Multi-GPU: --nproc-per-node N (several machines: torchrun ... -m "
        "training.cli_facenet triplet ..., README)",
    )
    build_parser(p)
    p.set_defaults(func=_triplet, _parser=p)


def _triplet(args: argparse.Namespace) -> int:
    from engines.base import EngineError
    from training.data import DataError
    from training.distributed import under_launcher
    from training.facenet_nets import ModelFileError
    from training.run_checks import NothingToDo
    from training.train import TrainingInterrupted, train
    from training.train_options import OptionError, apply_config

    parser = args._parser
    del args._parser, args.func
    try:
        apply_config(args, parser)
        if args.nproc_per_node > 1 and not under_launcher():
            return _launch(args)
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


def _launch(args: argparse.Namespace) -> int:
    """`triplet --nproc-per-node N`: this command, without that option, in N processes."""
    import torch

    from training.distributed import launch_local, uses_cuda
    from training.train_options import OptionError, check_options, command_line, given_as

    if args.gpu is not None and args.gpu.lower() != "cpu":
        raise OptionError(
            f"{given_as(args, 'gpu')} with {given_as(args, 'nproc_per_node')}: each process "
            "takes a GPU of its own, 0 to N-1 (CUDA_VISIBLE_DEVICES=1,2 chooses which)"
        )
    if uses_cuda(args.gpu) and args.nproc_per_node > torch.cuda.device_count():
        raise OptionError(
            f"{given_as(args, 'nproc_per_node')}: one process per CUDA device, and only "
            f"{torch.cuda.device_count()} are present (--gpu cpu trains on the CPU)"
        )
    if not args.resume:  # one error here rather than one from each process
        check_options(args)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    command = ["-u", "-m", "training.cli_facenet", "--log-level", level, "triplet"]
    return launch_local(command + command_line(args, "nproc_per_node"), args.nproc_per_node)


def _without_worker_traceback(message: str) -> str:
    """A data loader worker's error as PyTorch passes it on ("Caught DataError in DataLoader
    worker process 1. Original Traceback ...: training.data.DataError: MESSAGE"): MESSAGE."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split("Error: ", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    """Entry for ``torchrun -m training.cli_facenet triplet ...`` (multi-process training), and
    for the processes of ``triplet --nproc-per-node N``."""
    parser = argparse.ArgumentParser(prog="python -m training.cli_facenet")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log verbosity on stderr (default: INFO)",
    )
    register_facenet(parser.add_subparsers(dest="train_command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(  # as `facewatch` writes them
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
