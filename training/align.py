"""`facewatch train align`: a folder-per-identity photo collection -> aligned face crops.

What the FaceNet project's ``align_dataset_mtcnn.py`` does, through the engines' MTCNN:
for every image, detect faces; keep the main face (largest, nearest the centre) or, with
``--detect-multiple-faces``, every face (``name_0.png``, ``name_1.png``, ...; ``--format jpg`` for smaller files); crop it
with ``--margin`` pixels around the box (or ``--alignment similarity``: 5-point warp) to
``--image-size``; write PNGs under ``output_dir/<identity>/`` and one line per crop to
the bounding-box list file (``bounding_boxes.txt``: path x0 y0 x1 y1, or the path alone
when no face was found). Images whose output exists, or that the list file records as
without a face, are skipped, so an interrupted run resumes where it stopped; its summary
lists the latter again, as found by an earlier run.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from engines.align import (
    align_similarity,
    crop_with_margin,
    margin_box,
    pick_main_face,
    template_of,
)
from engines.base import ModelMetadata, bounds_text, progress_wanted, within
from engines.images import ImageError, read_image, write_image
from engines.mtcnn import MIN_FACE_SIZE_BOUNDS, MTCNN, MTCNNConfig
from training.data import DataError, identity_files, identity_folders, left_out_note

logger = logging.getLogger(__name__)

ALIGNMENTS = ("margin", "similarity")
SETTINGS_FILE = "alignment.json"


@dataclass
class AlignSummary:
    images: int = 0
    aligned: int = 0  # images with at least one face written this run
    skipped: int = 0  # done in an earlier run
    without_face: list[Path] = field(default_factory=list)  # this run
    # among the skipped: images an earlier run found no face in (its path-only lines in
    # bounding_boxes.txt)
    without_face_before: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    note: str | None = None  # the files of the identity folders left out, as a folder's note

    def text(self) -> str:
        earlier = len(self.without_face_before)
        lines = [
            f"images: {self.images}, aligned now: {self.aligned}, already done: {self.skipped}, "
            f"without a face: {len(self.without_face)}"
            + (f" (and {earlier} found by an earlier run)" if earlier else "")
            + f", unreadable: {len(self.unreadable)}"
        ]
        listed = [f"  no face: {p}" for p in self.without_face]
        listed += [f"  no face (earlier run): {p}" for p in self.without_face_before]
        lines += listed[:20]
        lines += [f"  unreadable: {reason}" for _, reason in self.unreadable[:20]]
        lines += [f"note: {self.note}"] if self.note else []
        return "\n".join(lines)


@dataclass(frozen=True)
class AlignOptions:
    image_size: int = 182
    margin: int = 44
    random_order: bool = False
    detect_multiple_faces: bool = False
    alignment: str = "margin"
    # with "similarity": where the landmarks go in the crop ((5, 2) pixels), when not the
    # reference template (``chip_template``)
    landmarks: tuple[tuple[float, float], ...] | None = None
    min_face_size: float = MTCNNConfig.min_face_size
    threads: int = 0
    image_format: str = "png"  # or "jpg" (smaller, lossy)
    jpeg_quality: int = 90

    @property
    def ext(self) -> str:
        return "." + self.image_format

    def check(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"--image-size {self.image_size}: must be >= 1")
        if not within(self.min_face_size, MIN_FACE_SIZE_BOUNDS):
            raise ValueError(
                f"--min-face-size {self.min_face_size:g}: must be "
                f"{bounds_text(MIN_FACE_SIZE_BOUNDS)} pixels"
            )
        if self.margin < 0:
            raise ValueError(f"--margin {self.margin}: must be >= 0")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"--format {self.image_format}: expected png or jpg")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg-quality {self.jpeg_quality}: must be in [1, 100]")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"--alignment {self.alignment}: expected one of {ALIGNMENTS}")
        if self.landmarks is not None and self.alignment != "similarity":
            raise ValueError("a landmark template needs --alignment similarity")


def _crop(
    rgb: np.ndarray, found: object, k: int, opts: AlignOptions
) -> tuple[np.ndarray, np.ndarray]:
    box = found.bbox_xyxy[k]  # type: ignore[attr-defined]
    if opts.alignment == "similarity":
        template = None if opts.landmarks is None else np.asarray(opts.landmarks, np.float32)
        face = align_similarity(rgb, found.landmarks[k], opts.image_size, template)  # type: ignore[attr-defined]
    else:
        face = crop_with_margin(rgb, box, opts.margin, opts.image_size)
    return face, margin_box(box, rgb.shape[:2], opts.margin)


def _outputs(out_base: Path, count: int, multiple: bool, ext: str) -> list[Path]:
    """The files of one image's faces: ``out_base`` (a path without suffix) + ``ext``, or
    numbered ``_0``, ``_1``... with --detect-multiple-faces."""
    if multiple:
        return [out_base.with_name(f"{out_base.name}_{k}{ext}") for k in range(count)]
    return [out_base.with_name(out_base.name + ext)]


def _no_face_line(out_base: Path, ext: str) -> str:
    """What the list file records for an image without a face: its (single) output path."""
    return str(out_base.with_name(out_base.name + ext))


def _done(out_base: Path, no_face: set[str], ext: str) -> bool:
    first = out_base.with_name(out_base.name + ext)
    return (
        _no_face_line(out_base, ext) in no_face
        or first.exists()
        or _outputs(out_base, 1, True, ext)[0].exists()
    )


def _recorded_without_face(boxes_path: Path) -> set[str]:
    """Outputs the list file records without a box: images where an earlier run found no
    face. Paths may hold spaces (``blank wall.png``): a line is a box line only when it
    ends in four numbers."""
    if not boxes_path.is_file():
        return set()
    lines = (line.strip() for line in boxes_path.read_text().splitlines())
    return {line for line in lines if line and not _is_box_line(line)}


def _is_box_line(line: str) -> bool:
    """``path x0 y0 x1 y1``, not a path alone (an output's path ends in its suffix)."""
    fields = line.rsplit(None, 4)
    if len(fields) < 5:
        return False
    try:
        [float(v) for v in fields[1:]]
    except ValueError:
        return False
    return True


def _write(path: Path, rgb: np.ndarray, jpeg_quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    params = (cv2.IMWRITE_JPEG_QUALITY, jpeg_quality) if path.suffix == ".jpg" else ()
    write_image(tmp, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    tmp.replace(path)


def align_image(
    detector: object, src: Path, out_base: Path, opts: AlignOptions
) -> list[tuple[Path, np.ndarray]]:
    """Detect, crop and write one image's faces as ``out_base`` + suffix (see ``_outputs``);
    returns (output path, crop box) per face.

    Raises ImageError for an unreadable image; returns [] when there is no face.
    """
    bgr = read_image(str(src))
    found = detector.detect([bgr])[0]  # type: ignore[attr-defined]
    if len(found) == 0:
        return []
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    keep = (
        list(range(len(found)))
        if opts.detect_multiple_faces
        else [pick_main_face(found.bbox_xyxy, rgb.shape[:2])]
    )
    written = []
    for path, k in zip(
        _outputs(out_base, len(keep), opts.detect_multiple_faces, opts.ext), keep, strict=True
    ):
        face, box = _crop(rgb, found, k, opts)
        _write(path, face, opts.jpeg_quality)
        written.append((path, box))
    return written


def _jobs(
    input_dir: Path, output_dir: Path, random_order: bool
) -> tuple[list[tuple[Path, Path]], str | None]:
    """Each photo and its crop's path without suffix; the note of the files left out."""
    if not input_dir.is_dir():
        what = "a file, not a folder" if input_dir.exists() else "input directory not found"
        raise DataError(f"{input_dir}: {what} (expected DIR/<identity>/<image>)")
    classes = identity_folders(input_dir)
    if not classes:
        raise DataError(
            f"{input_dir}: no identity folders (expected {input_dir}/<identity>/<image>)"
        )
    if random_order:
        random.shuffle(classes)
    jobs, shared = [], []
    walks = []
    for cls in classes:
        walks.append(walk := identity_files(cls))
        images = walk.files
        stems = Counter(src.stem for src in images)
        shared += [str(src) for src in images if stems[src.stem] > 1]
        jobs += [(src, output_dir / cls.name / src.stem) for src in images]
    if shared:  # they would share one crop (outputs are named by stem, as the original's)
        raise DataError(
            f"photos that share a name but for the suffix would share one aligned crop: "
            f"{', '.join(shared)}; rename them apart"
        )
    return jobs, left_out_note(input_dir, walks)


def _record_settings(output_dir: Path, opts: AlignOptions) -> None:
    """``alignment.json``: how the crops were made; training records it for export."""
    settings: dict[str, object] = {
        "image_size": opts.image_size,
        "margin": opts.margin,
        "alignment": opts.alignment,
    }
    if opts.landmarks is not None:
        settings["landmarks"] = [list(point) for point in opts.landmarks]
    settings["format"] = opts.image_format  # a second format would train on each face twice
    path = output_dir / SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        before.setdefault("format", "png")  # folders aligned before the format was recorded
        if before != settings:
            raise ValueError(
                f"{output_dir} was aligned with {before}; this run asks for {settings}"
            )
    path.write_text(json.dumps(settings) + "\n")


def chip_template(
    model_path: str | Path, image_size: int, margin: int
) -> tuple[tuple[float, float], ...]:
    """Where ``align --template MODEL`` puts the landmarks: MODEL's own template (its
    sidecar's ``extra.landmarks``, in pixels of its input), scaled to ``image_size - margin``
    and centred in the ``image_size`` crop; rounded to 0.01 px."""
    meta = ModelMetadata.load(model_path)
    if meta.input_size_hw is None:
        raise ValueError(f"{model_path}: not an embedding model (its sidecar has no input size)")
    template = template_of(meta.extra, int(meta.input_size_hw[0]))
    if template is None:
        raise ValueError(
            f"{model_path}: its sidecar has no landmark template (extra.landmarks); "
            "use --alignment similarity for the reference template"
        )
    if not 0 <= margin < image_size:
        raise ValueError(f"--margin {margin}: must be in [0, --image-size) with --template")
    inner = image_size - margin
    chip = template * (inner / meta.input_size_hw[0]) + margin / 2
    return tuple((round(float(x), 2), round(float(y), 2)) for x, y in chip)


def crop_landmarks(settings: dict[str, object], image_size: int) -> list[list[float]] | None:
    """The template of crops aligned with ``settings`` (``alignment.json``) as training sees
    them at ``image_size``: the central crop of a larger crop, a smaller one resized up
    (``training.data.crop_square``); None without a template."""
    landmarks = settings.get("landmarks")
    if landmarks is None:
        return None
    points = np.asarray(landmarks, dtype=np.float64)
    chip = int(settings["image_size"])
    if chip >= image_size:
        points = points - (chip - image_size) // 2
    else:
        points = (points + 0.5) * (image_size / chip) - 0.5  # pixel centres, as cv2.resize
    return [[round(float(x), 2), round(float(y), 2)] for x, y in points]


def read_settings(data_dir: str | Path) -> dict[str, object] | None:
    """The ``alignment.json`` of an aligned dataset, if it has one."""
    path = Path(data_dir).expanduser() / SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def align_dataset(
    input_dir: str | Path,
    output_dir: str | Path,
    opts: AlignOptions,
    mtcnn_dir: str | Path = "models/mtcnn",
    detector: object | None = None,
    progress: bool = True,
) -> AlignSummary:
    """Align every image of ``input_dir`` into ``output_dir`` (see the module doc), with a
    progress bar on a terminal (``progress`` False: none)."""
    opts.check()
    input_dir, output_dir = Path(input_dir).expanduser(), Path(output_dir).expanduser()
    if detector is None:
        detector = MTCNN.load(mtcnn_dir, threads=opts.threads, min_face_size=opts.min_face_size)
    jobs, note = _jobs(input_dir, output_dir, opts.random_order)
    output_dir.mkdir(parents=True, exist_ok=True)
    _record_settings(output_dir, opts)
    summary = AlignSummary(images=len(jobs), note=note)
    boxes_path = output_dir / "bounding_boxes.txt"
    no_face = _recorded_without_face(boxes_path)
    with open(boxes_path, "a") as boxes_file:
        bar = tqdm(jobs, desc="aligning", unit="img", disable=not progress_wanted(not progress))
        for src, out_base in bar:
            if _done(out_base, no_face, opts.ext):
                summary.skipped += 1
                if _no_face_line(out_base, opts.ext) in no_face:
                    summary.without_face_before.append(src)
                continue
            try:
                written = align_image(detector, src, out_base, opts)
            except ImageError as exc:
                summary.unreadable.append((src, str(exc)))
                continue
            if not written:
                summary.without_face.append(src)
                boxes_file.write(f"{_no_face_line(out_base, opts.ext)}\n")
                continue
            summary.aligned += 1
            for path, box in written:
                boxes_file.write(f"{path} {box[0]} {box[1]} {box[2]} {box[3]}\n")
            boxes_file.flush()
    # the command prints the summary; a log line at INFO would say it twice
    logger.debug("alignment done: %s", summary.text().splitlines()[0])
    return summary
