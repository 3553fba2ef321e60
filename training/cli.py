"""`facewatch train ...` subcommands. Registered through the `facewatch.commands` entry point,
so the daemon's CLI never imports this package."""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

from engines.base import install_hint

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `train` command group to the top-level parser."""
    train = subparsers.add_parser(
        "train", help="training tools: import/export MTCNN, train and validate FaceNet"
    )
    commands = train.add_subparsers(dest="train_command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "export-mtcnn",
        help="import the pretrained MTCNN weights (*.pt) and write ONNX models + sidecars",
        description="Write pnet/rnet/onet .onnx + .json from facenet-pytorch state dicts, "
        "and check ONNX Runtime against PyTorch on real images (max abs diff <= 1e-4).",
    )
    p.add_argument(
        "--weights-dir", type=Path, required=True, help="folder with pnet.pt, rnet.pt, onet.pt"
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("models/mtcnn"),
        help="where to write the models (default: models/mtcnn below the current folder: "
        "from the repository's root, the shipped ones are replaced)",
    )
    p.add_argument(
        "--images",
        type=Path,
        nargs="+",
        required=True,
        help="real photos used for the parity check",
    )
    p.set_defaults(func=_export_mtcnn)

    p = commands.add_parser(
        "torch-program",
        help="write the torch backend's program (.pt2) beside exported ONNX models",
        description="For `engines.backend: torch`: write MODEL.pt2 beside each MODEL.onnx "
        "(MTCNN's P-Net, R-Net, O-Net or a FaceNet that facewatch exported, e.g. the shipped "
        "ones), from the weights inside the ONNX file, and check it against ONNX Runtime. "
        "Run it with the PyTorch the daemon will use.",
    )
    p.add_argument("models", type=Path, nargs="+", metavar="MODEL.onnx")
    p.set_defaults(func=_torch_program)

    from training.cli_facenet import register_facenet

    register_facenet(commands)
    for command in commands.choices.values():
        command.set_defaults(func=_needs_extras(command.get_default("func")))


TRAIN_EXTRAS = frozenset({"torch", "onnx", "tensorboard"})  # pyproject's `train` extra


def _needs_extras(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``func``, but a missing PyTorch or onnx (a daemon-only install) is one clear error."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in TRAIN_EXTRAS:
                raise
            print(
                f"error: facewatch train {args.train_command}: needs the training extras, which are "
                f"not installed (no module {exc.name!r}): {install_hint('train')}",
                file=sys.stderr,
            )
            return 2

    return run


def _export_mtcnn(args: argparse.Namespace) -> int:
    from training.export_mtcnn import export_all

    try:
        diffs = export_all(args.weights_dir, args.out_dir, args.images)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: facewatch train export-mtcnn: {exc}", file=sys.stderr)
        return 2
    for name, diff in diffs.items():
        print(f"{name}: ONNX Runtime vs PyTorch max abs diff {diff:.2e}")
    return 0


def _torch_program(args: argparse.Namespace) -> int:
    from engines.base import EngineError, ModelMetadata
    from training.export_facenet import torch_program_from_onnx
    from training.export_torch import MTCNN_NETS, mtcnn_program

    for path in args.models:
        try:
            kind = ModelMetadata.load(path).kind
            if kind.removeprefix("mtcnn-") in MTCNN_NETS:
                pt2, diff = mtcnn_program(kind.removeprefix("mtcnn-"), path, path)
            else:
                info = torch_program_from_onnx(path)
                pt2, diff = path.with_name(info["file"]), info["max_abs_diff"]
        except (
            EngineError,
            ValueError,
            FileNotFoundError,
            RuntimeError,
            pickle.UnpicklingError,
        ) as exc:
            print(f"error: facewatch train torch-program: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {pt2}: max abs diff vs ONNX Runtime {diff:.2e}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: facewatch train ...")
