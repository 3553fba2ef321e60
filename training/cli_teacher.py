"""`facewatch train embed | embed-dlib | validate-dlib | import-dlib`: teacher files for
`--loss distill` (an ONNX model's embeddings, or dlib's descriptors: training/teacher_dlib.py),
the LFW protocol on dlib's descriptor, the distillation teacher's ceiling, and dlib's network
itself as an ONNX model the engines run (training/dlib_net.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engines.loader import default_models_dir
from training.help_format import NO_PROGRESS_HELP

if TYPE_CHECKING:
    from training.dlib_faces import DlibSettings


def register_teacher(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the teacher subcommands to the `facewatch train` sub-parsers."""
    _add_embed(commands)
    _add_dlib(commands)
    _add_import_dlib(commands)


def fail(message: str) -> int:
    """``error: MESSAGE`` on stderr; the exit status of a `facewatch train` command that
    failed (2)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def _add_embed(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "embed",
        help="embed a folder-per-identity dataset with an ONNX model into a .npz teacher file",
    )
    p.add_argument("data_dir", type=Path, help="aligned crops, <identity>/<image>")
    p.add_argument("--model", type=Path, required=True, help="ONNX embedding model (with sidecar)")
    p.add_argument("--out", type=Path, required=True, help=".npz to write (paths, embeddings)")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.set_defaults(func=_embed)


def _embed(args: argparse.Namespace) -> int:
    from training.data import DataError, load_dataset
    from training.teacher import write_cache

    try:
        dataset = load_dataset(args.data_dir)
        out = write_cache(
            args.model, dataset, args.data_dir, args.out, progress=not args.no_progress
        )
    except (DataError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    print(f"wrote {out}")
    return 0


def _dlib_options(p: argparse.ArgumentParser, box: str, upsample: int) -> None:
    p.add_argument(
        "--locate",
        choices=("detect", "box", "full"),
        default="detect",
        help="face rectangle for dlib's 5 landmarks: dlib's HOG detector (the expected box "
        "when it finds none), always the expected box, or the whole image",
    )
    p.add_argument(
        "--box",
        default=box,
        help="expected face box as fractions x0,y0,x1,y1 of the image (default: %(default)s)",
    )
    p.add_argument(
        "--upsample", type=int, default=upsample, help="HOG detector upsampling (%(default)s)"
    )
    p.add_argument("--jitters", type=int, default=0, help="dlib num_jitters (0: none)")
    p.add_argument(
        "--pad",
        type=float,
        default=0.0,
        help="mirror this fraction of the image side around it first (the chip may reach "
        "past a tight crop; 0: dlib's black)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (one dlib each)")
    p.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="dlib model files (default: the face-recognition-models package)",
    )


def _dlib_settings(args: argparse.Namespace) -> DlibSettings:
    from training.dlib_faces import DlibSettings

    try:
        box = tuple(float(v) for v in args.box.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ValueError(f"--box {args.box!r}: expected four fractions x0,y0,x1,y1")
    return DlibSettings(args.locate, args.upsample, args.jitters, 0.25, box, args.pad)


def _add_dlib(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.dlib_faces import CROP_BOX

    crop_box = ",".join(f"{v:g}" for v in CROP_BOX)
    p = commands.add_parser(
        "embed-dlib",
        help="dlib's 128-D descriptors of a folder-per-identity dataset of aligned crops "
        "into a .npz teacher file (needs dlib-bin and face-recognition-models)",
        description="Resumable: rows of an existing --out or its .partial.npz made with the "
        "same settings are reused. See training/teacher_dlib.py.",
    )
    p.add_argument("data_dir", type=Path, help="aligned crops, <identity>/<image>")
    p.add_argument("--out", type=Path, required=True, help=".npz to write (paths, embeddings)")
    _dlib_options(p, crop_box, 0)
    p.add_argument("--float16", action="store_true", help="store half-size embeddings")
    p.add_argument("--restart", action="store_true", help="do not reuse earlier rows")
    p.set_defaults(func=_embed_dlib)

    p = commands.add_parser(
        "validate-dlib",
        help="the LFW protocol on dlib's descriptor (the distillation teacher's ceiling)",
    )
    p.add_argument("--lfw-dir", type=Path, required=True, help="LFW images (raw, or crops)")
    p.add_argument("--lfw-pairs", type=Path, required=True, help="pairs.txt")
    p.add_argument(
        "--lfw-nrof-folds", type=int, default=10, help="folds of the LFW protocol (default 10)"
    )
    p.add_argument(
        "--align",
        action="store_true",
        help="first make the MTCNN margin crops the training data has (--image-size, --margin)",
    )
    p.add_argument("--image-size", type=int, default=182, help="crop size with --align")
    p.add_argument("--margin", type=int, default=44, help="crop margin with --align")
    p.add_argument(
        "--mtcnn-dir",
        type=Path,
        default=default_models_dir() / "mtcnn",
        help="MTCNN models for --align",
    )
    p.add_argument("--out-dir", type=Path, default=None, help="write lfw.json and roc.png here")
    _dlib_options(p, "0.27,0.32,0.70,0.75", 1)
    p.set_defaults(func=_validate_dlib)


def _embed_dlib(args: argparse.Namespace) -> int:
    from training.data import DataError
    from training.dlib_faces import DlibMissing
    from training.teacher_dlib import embed_dataset

    try:
        summary = embed_dataset(
            args.data_dir,
            args.out,
            settings=_dlib_settings(args),
            models=args.models_dir,
            workers=args.workers,
            resume=not args.restart,
            dtype="float16" if args.float16 else "float32",
        )
    except (DlibMissing, DataError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    print(summary.text())
    return 1 if summary.unreadable else 0


def _validate_dlib(args: argparse.Namespace) -> int:
    from training.data import DataError
    from training.dlib_faces import DlibMissing
    from training.teacher_dlib import DlibEmbedder, raw_distance_result
    from training.validate import MtcnnAligner, evaluate_pairs, write_report

    try:
        embedder = DlibEmbedder(
            _dlib_settings(args),
            args.models_dir,
            args.workers,
        )
        aligner = None
        if args.align:
            aligner = MtcnnAligner(args.mtcnn_dir, args.image_size, "margin", args.margin)
            embedder.image_size = args.image_size  # the centre crop without a face: same size
        result, no_face = evaluate_pairs(
            embedder, args.lfw_pairs, args.lfw_dir, args.lfw_nrof_folds, 16, aligner
        )
        raw = raw_distance_result(embedder, args.lfw_pairs, args.lfw_dir, args.lfw_nrof_folds)
    except (DlibMissing, DataError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    print(f"dlib ResNet ({args.locate}), L2-normalised: {result.summary()}")
    print(f"dlib ResNet ({args.locate}), raw descriptors: {raw.summary()}")
    undetected = int((~embedder.detected).sum())
    print(f"dlib's detector found no face in {undetected} of {len(embedder.detected)} images")
    if no_face:
        print(f"MTCNN found no face in {no_face} image(s): centre-cropped")
    if args.out_dir is not None:
        paths = write_report(result, no_face, args.out_dir, "dlib_face_recognition_resnet_model_v1")
        print(f"report: {paths['json']}, ROC: {paths['roc']}")
    return 0


def _add_import_dlib(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engines.loader import default_facenet

    p = commands.add_parser(
        "import-dlib",
        help="convert dlib's CC0 face recognition ResNet into an ONNX embedding model "
        "(no dlib needed; LFW 98.7 %% through facewatch's own detection and alignment)",
    )
    p.add_argument(
        "model",
        type=Path,
        nargs="?",
        default=None,
        help="dlib_face_recognition_resnet_model_v1.dat (default: the one the PyPI package "
        "face-recognition-models installed)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=default_facenet(),
        help="ONNX file to write, with its sidecar and model card (default: %(default)s, "
        "the model facewatch ships)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a model already at --out (galleries enrolled with it will be refused)",
    )
    p.set_defaults(func=_import_dlib)


def _import_dlib(args: argparse.Namespace) -> int:
    from training.data import DataError
    from training.dlib_faces import DESCRIPTOR_MODEL, DlibMissing, models_dir
    from training.export_dlib import export_dlib
    from training.export_staging import out_refused

    refused = out_refused(args.out, args.force)
    if refused:
        return fail(refused)
    try:
        model = args.model or models_dir() / DESCRIPTOR_MODEL
        command = f"facewatch train import-dlib {model.name} --out {_shown(args.out)}"
        path, diff = export_dlib(model, args.out, command)
    except (DlibMissing, DataError, ValueError) as exc:
        return fail(str(exc))
    print(
        f"wrote {path} (+ sidecar, model card); ONNX Runtime (fp16 weights) vs PyTorch max abs "
        f"diff {diff:.2e}. Measure it: facewatch train validate {path} --align --record ..."
    )
    return 0


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (for the sidecar)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
