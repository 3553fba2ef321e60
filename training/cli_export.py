"""`facewatch train export`: a checkpoint or a facenet-pytorch state dict to the ONNX model
the daemon runs, with its sidecar and model card (training/export_facenet.py does the work)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from engines.loader import default_facenet
from training.choices import count
from training.cli_args import argv_after, run_checkpoint
from training.cli_teacher import fail
from training.help_format import DefaultsHelpFormatter


def register_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `export` to the `facewatch train` sub-parsers."""
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
    _out_options(p)
    _check_options(p)
    _model_options(p)
    p.set_defaults(func=_export)


def _out_options(p: argparse.ArgumentParser) -> None:
    """Where the model goes, and when one already there is replaced."""
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


def _check_options(p: argparse.ArgumentParser) -> None:
    """What the export is checked with, and the LFW figures it records."""
    p.add_argument(
        "--parity-images",
        type=Path,
        default=None,
        help="folder (searched recursively) of face crops for the ONNX Runtime vs PyTorch check",
    )
    p.add_argument(
        "--parity-count", type=count(1), default=16, help="crops used for the parity check"
    )
    p.add_argument(
        "--lfw-report",
        type=Path,
        default=None,
        help="lfw.json from `validate --out-dir` to record in the sidecar and card",
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    """What the model file holds: its weights' precision, a torch program, its provenance."""
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


def _export(args: argparse.Namespace) -> int:

    from training.checkpoint import load_model_file
    from training.data import DataError
    from training.export_facenet import export_checkpoint
    from training.export_inputs import lfw_report, parity_crops
    from training.export_staging import out_refused

    args.checkpoint = run_checkpoint(args.checkpoint)
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
        tail = argv_after("export") or [str(args.checkpoint)]
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
    _report(args, path, crops)
    return 0


def _report(args: argparse.Namespace, path: Path, crops: object) -> None:
    """What the written model is like (collapsed embeddings, int8's cosine) and who uses it."""
    if args.parity_images is not None:  # faces of several people, not random pixels
        from training.export_quality import warn_collapsed

        warn_collapsed(path, crops)
    if args.int8:
        from engines.base import ModelMetadata

        cosine = ModelMetadata.load(path).extra["int8_min_cosine"]
        print(f"quantised to int8: lowest cosine to the fp32 embeddings {cosine:.4f}")
    if Path(path).resolve() == default_facenet().resolve():
        print("the daemon (recognition.model: auto), enroll and identify use it from now on")
    else:
        print(f"use it: facewatch enroll --model {path} ..., recognition.model: {path}")
