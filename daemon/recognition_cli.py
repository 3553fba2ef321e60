"""`facewatch enroll` and `facewatch identify`: who is known, and who is in a photo.

Both detect faces with the shipped MTCNN, cut them the way the FaceNet model's sidecar says,
and embed them; the `gallery` commands (daemon/gallery_cli.py) manage what is enrolled.
Exit status: 0 done, 1 an image or the gallery refused (the reason is printed), 2 a model or
argument problem.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from daemon import gallery_cli
from daemon.archive_files import VISIT_FILE, archive_level
from daemon.config import ConfigError
from daemon.detect_cli import IMAGE_SUFFIXES, Outputs, input_name, progress_wanted
from daemon.gallery import Enrollment, Gallery, GalleryError, Match, clean_name
from daemon.recognition import (
    DEFAULT_MIN_FACE_PX,
    DEFAULT_MIN_SHARPNESS,
    QualityGates,
    Rejected,
)
from engines import BACKENDS, EngineError
from engines.base import file_sha256
from engines.detectors import load_facenet
from engines.facenet import FaceNet
from engines.images import ImageError, read_image, write_image
from engines.loader import PRECISIONS, default_facenet, default_models_dir
from engines.mtcnn import MTCNN, FrameDetections

logger = logging.getLogger(__name__)

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


def register(commands: argparse._SubParsersAction) -> None:
    _add_enroll(commands)
    _add_identify(commands)
    gallery_cli.register(commands)


def add_model_options(p: argparse.ArgumentParser) -> None:
    gallery_cli.add_gallery_option(p)
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"FaceNet .onnx with its .json sidecar (default: {default_model_path()})",
    )
    p.add_argument(
        "--backend", choices=BACKENDS, default="onnxruntime", help="FaceNet engine backend"
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default="auto",
        help="bf16: FaceNet on OpenVINO in bf16, about 2x faster on CPUs with native bf16 "
        "(AVX512_BF16, AMX), same gallery as fp32; auto (default): bf16 where the CPU has it",
    )
    p.add_argument(
        "--flip",
        action="store_true",
        help="average each face's embedding with its mirror image's (a gallery remembers "
        "this: enroll and identify must agree)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_enroll(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "enroll",
        help="add people to the gallery from photos",
        description="Enroll one person from photos (--name NAME IMAGE...) or many from a "
        "folder with one sub-folder per person (--dir DIR). Every photo must show exactly one "
        "face (or use --largest), large and sharp enough; in a face archive visit folder, the "
        "face its visit.json places is taken. A rejected photo is reported with its reason "
        "and then nothing is enrolled, unless --skip-bad.",
    )
    p.add_argument(
        "images",
        nargs="*",
        type=Path,
        metavar="IMAGE",
        help="photos of --name (or folders of them)",
    )
    p.add_argument("--name", help="who the photos show")
    p.add_argument(
        "--dir",
        type=Path,
        help="folder of per-person sub-folders (name = folder; the photos anywhere inside it; "
        "hidden and @ folders such as .thumbnails and @eaDir are skipped; not the face "
        "archive's folders: enroll its visits with --name)",
    )
    p.add_argument("--largest", action="store_true", help="several faces: enroll the largest")
    p.add_argument(
        "--min-face-px",
        type=_non_negative,
        default=DEFAULT_MIN_FACE_PX,
        help=f"shortest side of the face box, pixels (default {DEFAULT_MIN_FACE_PX:.0f})",
    )
    p.add_argument(
        "--min-sharpness",
        type=_non_negative,
        default=DEFAULT_MIN_SHARPNESS,
        help="blur gate: variance of the Laplacian of the aligned grey face crop "
        f"(default {DEFAULT_MIN_SHARPNESS:.0f}; 0 disables)",
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="enroll the good photos even if others fail"
    )
    add_model_options(p)
    p.set_defaults(func=run_enroll)


def _add_identify(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "identify",
        help="name every face in photos (or say unknown)",
        description="Detect every face and match it against the gallery: the identity, or "
        "unknown, with the squared L2 distance to the nearest enrolled face.",
    )
    p.add_argument(
        "images", nargs="+", type=Path, metavar="IMAGE", help="photos, or folders of them"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image on stdout ({source, error} for an image that failed)",
    )
    p.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write images with names drawn, in the inputs' folder tree (as detect does)",
    )
    add_model_options(p)
    p.set_defaults(func=run_identify)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"{text} is negative (0 disables the gate)")
    return value


@dataclass
class Models:
    detector: MTCNN
    facenet: FaceNet


def load_models(args: argparse.Namespace) -> Models:
    """The detector and the FaceNet model, or EngineError with what to do."""
    if args.threads < 0:
        raise EngineError("--threads must be >= 0")
    model, flip = args.model, args.flip
    recognition = gallery_cli.daemon_recognition(args)  # --config: the daemon's model
    if recognition is not None:
        if model is not None or (flip and not recognition.flip):
            raise EngineError(
                f"--config {args.config} gives the model and flip the daemon uses: --model "
                "and --flip would make a gallery it refuses; drop them (or --config)"
            )
        configured = recognition.model
        if configured is None:
            raise EngineError(f"{args.config}: recognition.model is null (detection only)")
        if configured != "auto":
            model = Path(configured)
        flip = recognition.flip
    path = model or default_model_path()
    if not path.is_file() and model is None:
        raise EngineError(f"{path}: no FaceNet model. " + NO_DEFAULT_MODEL.format(path=path))
    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)
    facenet = load_facenet(
        path, backend=args.backend, threads=threads, flip=flip, precision=args.precision
    )
    detector = MTCNN.load(default_models_dir() / "mtcnn", threads=threads)
    return Models(detector, facenet)


# -- enroll -----------------------------------------------------------------------------


def _enroll_jobs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, image) pairs from the arguments; ValueError on a usage mistake."""
    if args.dir is not None:
        if args.name or args.images:
            raise ValueError("--dir takes no --name and no IMAGE arguments")
        if not args.dir.is_dir():
            what = "not a folder" if args.dir.exists() else "no such folder"
            raise ValueError(f"{args.dir}: {what} (one sub-folder per person expected)")
        level = archive_level(args.dir)
        if level is not None:
            raise ValueError(
                f"{args.dir}: {level} folder of the face archive, not a folder of per-person "
                "folders: enroll a visit with --name NAME VISIT_FOLDER... (`facewatch archive "
                "list` finds them)"
            )
        entries = sorted(p for p in args.dir.iterdir() if not _hidden(p.name))
        people = [p for p in entries if p.is_dir()]
        if not people:
            raise ValueError(f"{args.dir}: no sub-folders (one per person expected)")
        for loose in (p for p in entries if not p.is_dir()):
            print(f"skipped {loose}: not in a person's folder", file=sys.stderr)
        return [(_name(p.name, p), image) for p in people for image in _photos(p)]
    if not args.name:
        raise ValueError("give --name NAME with IMAGE arguments, or --dir DIR")
    name = _name(args.name, None)
    if not args.images:
        raise ValueError(f"no images given for {name!r}")
    for path in args.images:
        level = archive_level(path) if path.is_dir() else None
        if level not in (None, "a visit"):
            raise ValueError(
                f"{path}: {level} folder of the face archive: it holds many visits, of "
                "different people; give the visit folders of this one (`facewatch archive "
                "list` finds them)"
            )
    return [(name, image) for path in args.images for image in _photos(path)]


def _name(name: str, folder: Path | None) -> str:
    try:
        return clean_name(name)
    except GalleryError as exc:
        raise ValueError(f"{folder}: {exc}" if folder else f"--name: {exc}") from None


def _hidden(name: str) -> bool:
    """Dot files and folders, macOS's ._ files, a NAS's @eaDir: never people or photos."""
    return name.startswith((".", "@"))


def _photos(path: Path) -> list[Path]:
    """A file as given; a folder's images at any depth (not in hidden folders), sorted. A
    folder without any is kept, to be reported as a rejected image."""
    if not path.is_dir():
        return [path]
    found = sorted(
        p
        for p in path.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(_hidden(part) for part in p.relative_to(path).parts)
        and p.is_file()
    )
    return found or [path]


def _enroll_crop(models: Models, gates: QualityGates, path: Path) -> np.ndarray:
    """The aligned crop of the one face to enroll from ``path``; Rejected / ImageError."""
    if path.is_dir():
        raise Rejected("folder holds no images")
    image = read_image(str(path))
    found = models.detector.detect([image])[0]
    k = gates.choose_face(found, image.shape[:2], archived_face(path))
    crop = models.facenet.align(image, found, [k])
    gates.check_sharpness(crop[0])
    return crop[0]


def archived_face(path: Path) -> np.ndarray | None:
    """Where the visit's face is in a face archive image (its visit.json says), else None."""
    entries = _visit_images(path.parent)
    box = entries.get(path.name)
    return None if box is None else np.asarray(box, np.float64)


@functools.lru_cache(maxsize=64)
def _visit_images(folder: Path) -> dict[str, list[float]]:
    """file -> face_xyxy of a face archive visit's images; {} for any other folder."""
    try:
        about = json.loads((folder / VISIT_FILE).read_text(encoding="utf-8"))
        return {
            str(image["file"]): [float(v) for v in image["face_xyxy"]]
            for image in about["images"]
            if len(image.get("face_xyxy", ())) == 4
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _check_gallery(path: Path, model_id: str) -> dict[str, set[str]]:
    """Refuse early (before any work) a gallery of another model or one we cannot write;
    returns who holds each photo already enrolled (by SHA-256)."""
    if not path.exists() and not path.is_symlink():
        return {}
    with Gallery.open(path, model_id, writable=True) as gallery:
        return gallery.sources()


def _check_photo(holders: dict[str, set[str]], name: str, path: Path) -> str:
    """The photo's SHA-256; Rejected when it is enrolled (or being enrolled) as someone else:
    one photo, one person."""
    sha = file_sha256(path)
    others = sorted(holders.get(sha, set()) - {name})
    if others:
        raise Rejected(f"the same photo is enrolled as {', '.join(others)}")
    holders.setdefault(sha, set()).add(name)
    return sha


def run_enroll(args: argparse.Namespace) -> int:
    try:
        jobs = _enroll_jobs(args)
        models = load_models(args)
    except (ValueError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gallery_path = gallery_cli.gallery_path(args)
    gates = QualityGates(args.min_face_px, args.min_sharpness, args.largest)
    try:
        holders = _check_gallery(gallery_path, models.facenet.model_id)
    except GalleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    crops, accepted, rejected = [], [], []
    show = progress_wanted(args) and len(jobs) > 1
    for name, path in tqdm(jobs, desc="enroll", unit="image", disable=not show, file=sys.stderr):
        try:
            crop = _enroll_crop(models, gates, path)
            accepted.append((name, path, _check_photo(holders, name, path)))
            crops.append(crop)
        except (Rejected, ImageError, ValueError, OSError) as exc:
            reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            rejected.append(reason)
            tqdm.write(f"rejected: {reason}", file=sys.stderr)
    if rejected and not args.skip_bad:
        print(
            f"error: {len(rejected)} of {len(jobs)} image(s) rejected; nothing was enrolled "
            "(fix or drop them, or pass --skip-bad to enroll the others)",
            file=sys.stderr,
        )
        return 1
    if not accepted:
        print("error: no image could be enrolled", file=sys.stderr)
        return 1
    return _store(gallery_path, models, crops, accepted, len(rejected))


def _store(
    gallery_path: Path,
    models: Models,
    crops: list[np.ndarray],
    accepted: list[tuple[str, Path, str]],
    n_rejected: int,
) -> int:
    embeddings = models.facenet.embed(np.stack(crops))
    faces = [
        Enrollment(name, vector, sha)
        for (name, _, sha), vector in zip(accepted, embeddings, strict=True)
    ]
    net = models.facenet
    new = not gallery_path.exists()
    try:
        with Gallery.open_or_create(
            gallery_path, net.model_id, net.embedding_size, **_threshold_of(net)
        ) as gallery:
            added = gallery.enroll(faces)
    except GalleryError as exc:
        if new and gallery_path.is_file():
            gallery_path.unlink()  # nothing was enrolled: leave no empty gallery behind
        print(f"error: {exc}", file=sys.stderr)
        return 1
    names = sorted({name for name, _, _ in accepted})
    print(
        f"enrolled {added} new face(s) of {len(names)} person(s) into {gallery_path}: "
        + ", ".join(names)
        + (
            f" ({len(faces) - added} not added: already enrolled, or the same photo twice)"
            if added < len(faces)
            else ""
        )
        + (f"; {n_rejected} image(s) skipped" if n_rejected else "")
    )
    return 0


def _threshold_of(net: FaceNet) -> dict[str, float]:
    """A new gallery starts at the model's LFW threshold for a false accept rate of 1e-3 when
    its sidecar has one, else at its LFW best threshold. The best threshold balances LFW's
    pairs, one against one; a gallery compares each face with every enrolled photo, so a
    stranger meets many chances of a close one (dlib's network at 0.19: 44 % of strangers
    named, against 100 enrolled photos)."""
    lfw = net.meta.extra.get("lfw") or {}
    on_our_scale = (
        isinstance(lfw, dict)
        and lfw.get("distance_metric", 0) == 0
        and not lfw.get("use_flipped_images", False)
    )  # else it is an angle, or a distance between concatenated embeddings
    start = (lfw.get("far_threshold") or lfw.get("best_threshold")) if on_our_scale else None
    return {"threshold": float(start)} if start else {}


# -- identify -----------------------------------------------------------------------------


def run_identify(args: argparse.Namespace) -> int:
    try:
        models = load_models(args)
    except (EngineError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        gallery = Gallery.open(gallery_cli.gallery_path(args), models.facenet.model_id)
        recognition = gallery_cli.daemon_recognition(args)
        if recognition is not None:  # match as the daemon does
            gallery.threshold_override = recognition.threshold
    except GalleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.annotate:
        try:
            args.annotate.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: --annotate {args.annotate}: {exc.strerror}", file=sys.stderr)
            return 2
    paths = [(photo, input_name(path, photo)) for path in args.images for photo in _photos(path)]
    outputs = Outputs(args.annotate) if args.annotate else None
    errors = 0
    show = progress_wanted(args) and len(paths) > 1
    with gallery:
        for path, name in tqdm(paths, desc="identify", disable=not show, file=sys.stderr):
            try:
                if path.is_dir():
                    raise ImageError(f"{path}: folder holds no images")
                out = outputs.path_for(name, ".jpg") if outputs else None
                _identify_one(models, gallery, path, args, out)
            except (ImageError, OSError, ValueError) as exc:
                errors += 1
                reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                tqdm.write(f"error: {reason}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"source": str(path), "error": reason}))
    if errors:
        print(f"{errors} of {len(paths)} image(s) failed", file=sys.stderr)
    return 1 if errors else 0


def _identify_one(
    models: Models, gallery: Gallery, path: Path, args: argparse.Namespace, out: Path | None
) -> None:
    image = read_image(str(path))
    found = models.detector.detect([image])[0]
    matches = gallery.match(models.facenet.embed_faces(image, found))
    faces = [
        {**face, **_match_json(match)} for face, match in zip(found.to_json(), matches, strict=True)
    ]
    if args.json:
        print(json.dumps({"source": str(path), "image_hw": list(image.shape[:2]), "faces": faces}))
    else:
        tqdm.write(f"{path}: {len(faces)} face(s)", file=sys.stdout)
        for k, face in enumerate(faces, 1):
            box = " ".join(f"{v:.0f}" for v in face["bbox_xyxy"])
            tqdm.write(f"  face {k} [{box}]: {_describe(face)}", file=sys.stdout)
    if out is not None:
        write_image(out, draw(image, found, matches))


def _match_json(match: Match) -> dict[str, object]:
    finite = np.isfinite(match.distance)
    return {
        "identity": match.identity,
        "distance": round(match.distance, 4) if finite else None,
        "confidence": round(match.confidence, 4),
        "nearest": match.nearest,
    }


def _describe(face: dict) -> str:
    if face["identity"] is not None:
        return f"{face['identity']} (distance {face['distance']:.3f})"
    if face["nearest"] is None:
        return "unknown (the gallery is empty)"
    return f"unknown (nearest {face['nearest']}, distance {face['distance']:.3f})"


def draw(image: np.ndarray, found: FrameDetections, matches: list[Match]) -> np.ndarray:
    """A copy of ``image`` with each face boxed and labelled (green: known, red: unknown)."""
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 600))
    for box, match in zip(found.bbox_xyxy, matches, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        colour = (0, 200, 0) if match.identity else (0, 0, 255)
        label = f"{match.identity or 'unknown'} {match.distance:.2f}"
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        cv2.putText(
            out, label, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness,
            colour, thickness,
        )  # fmt: skip
    return out
