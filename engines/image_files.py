"""Which files of a folder are photos (or videos): one rule for every command that walks
folders (detect, identify, enroll, train align, training, TensorRT calibration).

A file is taken by its extension (``PHOTO_SUFFIXES``, and ``VIDEO_SUFFIXES`` for the
commands that read videos; any case); a file named directly is read whatever its name. Hidden entries (``.thumbnails``, macOS's ``._photo.jpg``, a
Synology NAS's ``@eaDir``) are never photos or people. Symlinked files and folders are
followed (a folder reached twice, through a link back up the tree, is walked once).
HEIC/HEIF photos are left out like other files OpenCV cannot read, and the folder's note
says how many and how to convert them (``HEIC_ADVICE``); one beside a photo of its name
(the JPEG ``heif-convert`` leaves) is already converted and not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# what OpenCV reads (AVIF where it is built with libavif); .jfif and .jpe are JPEGs as
# Windows browsers and old cameras name them
PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm"}
    | {".ppm", ".gif", ".avif"}
)
# iPhones' default, some cameras'. No photo to a folder walk: taken, it failed enroll and
# refused align's folder (IMG_1.JPG beside IMG_1.HEIC, what heif-convert leaves), so the
# folder's note gives the advice
HEIC_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
# containers OpenCV's FFmpeg opens, as phones, camcorders (AVCHD's .mts/.m2ts), DVDs (.vob),
# NVR exports (.ts, .mp4, .avi) and older Windows and web tools (.wmv/.asf, .flv) name them
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".asf", ".flv", ".3gp", ".3g2"}
    | {".mpg", ".mpeg", ".vob", ".ts", ".mts", ".m2ts"}
)
# files a folder of photos holds that nobody takes for photos: not worth a word
CLUTTER = frozenset({"thumbs.db", "desktop.ini"})
# ISO-BMFF brands (the ftyp box's first) of HEIC/HEIF stills and sequences
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEIC_ADVICE = (
    "HEIC/HEIF photos (an iPhone's default) are not read: convert them to JPEG (heif-convert "
    "PHOTO.HEIC PHOTO.jpg, or on the iPhone Settings > Camera > Formats > Most Compatible)"
)
LEFT_OUT_SHOWN = 5  # a folder's note names this many of the files it did not take


def is_hidden(name: str) -> bool:
    """Dot files and folders, macOS's ._ files, a NAS's @eaDir: never people or photos."""
    return name.startswith((".", "@"))


@dataclass
class FolderFiles:
    """A folder's files with one of the suffixes asked for (sorted), and the visible files
    left out by their extension (``left_out``, clutter such as Thumbs.db not counted)."""

    files: list[Path] = field(default_factory=list)
    left_out: list[Path] = field(default_factory=list)
    taken: str = "photos"  # what the files are, as the note says it

    def note(self, folder: Path) -> str | None:
        """What to tell a user about the files left out (named from ``folder``), with how to
        convert the HEIC/HEIF photos among them, or None when there are none."""
        heic = self.unconverted_heic()
        others = [p for p in self.left_out if p.suffix.lower() not in HEIC_SUFFIXES]
        parts = []
        if others:
            parts.append(
                f"left out {len(others)} file(s) that are not {self.taken} by their "
                f"extension: {_some(others, folder)}"
            )
        if heic:
            parts.append(f"left out {len(heic)} ({_some(heic, folder)}): {HEIC_ADVICE}")
        return f"{folder}: " + "; ".join(parts) if parts else None

    def unconverted_heic(self) -> list[Path]:
        """The HEIC/HEIF photos left out with no photo of their name beside them."""
        taken = {p.with_suffix("") for p in self.files if p.suffix.lower() in PHOTO_SUFFIXES}
        return [
            p
            for p in self.left_out
            if p.suffix.lower() in HEIC_SUFFIXES and p.with_suffix("") not in taken
        ]


def _some(paths: list[Path], folder: Path) -> str:
    """The first few of ``paths``, each as a path within ``folder`` (in a tree of visits,
    ``2024-05-01/visit.json`` says more than ``visit.json`` five times)."""
    names = [str(_within(p, folder)) for p in paths[:LEFT_OUT_SHOWN]]
    more = len(paths) - len(names)
    return ", ".join(names) + (f" and {more} more" if more else "")


def _within(path: Path, folder: Path) -> Path:
    try:
        return path.relative_to(folder)
    except ValueError:
        return Path(path.name)


def folder_files(
    folder: Path, suffixes: frozenset[str] = PHOTO_SUFFIXES, recursive: bool = True
) -> FolderFiles:
    """The files of ``folder`` (at any depth, or directly inside with ``recursive`` False)
    whose suffix is one of ``suffixes``, outside hidden folders, following symlinks."""
    found = FolderFiles(taken="photos or videos" if suffixes & VIDEO_SUFFIXES else "photos")
    seen: set[tuple[int, int]] = set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        here = os.stat(top)
        if (here.st_dev, here.st_ino) in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add((here.st_dev, here.st_ino))
        dirs[:] = sorted(d for d in dirs if not is_hidden(d)) if recursive else []
        for name in names:
            path = Path(top) / name
            if is_hidden(name) or not path.is_file():  # a dangling link is no file
                continue
            if path.suffix.lower() in suffixes:
                found.files.append(path)
            elif name.lower() not in CLUTTER:
                found.left_out.append(path)
    found.files.sort()
    found.left_out.sort()
    return found


def undecodable_reason(path: str | Path, data: bytes) -> str:
    """Why a file OpenCV could not decode was not read, as a user can act on it: HEIC/HEIF
    (by its content, or its name) and AVIF said plainly, anything else as corrupt or of an
    unknown format."""
    brand = data[8:12] if data[4:8] == b"ftyp" else b""
    if brand in HEIF_BRANDS or (not brand and Path(path).suffix.lower() in HEIC_SUFFIXES):
        return HEIC_ADVICE
    if brand in AVIF_BRANDS:
        return "AVIF photo not decoded (damaged, or this OpenCV reads no AVIF): convert it to JPEG"
    return "not a readable image (corrupt, truncated or unknown format)"
