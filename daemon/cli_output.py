"""What the commands that read photos and videos (detect, identify, enroll) share in their
output: progress bars, ``--annotate DIR``'s files in the inputs' folder tree, and faces'
boxes and labels drawn on a picture."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from engines.base import progress_wanted as on_terminal
from engines.mtcnn import FrameDetections


def progress_wanted(args: argparse.Namespace) -> bool:
    """Progress bars: on a terminal, unless --no-progress (``engines.base.progress_wanted``)."""
    return on_terminal(args.no_progress)


def input_name(argument: Path, path: Path) -> Path:
    """How ``path``, found from the command-line ``argument``, is named below an output
    folder: a file argument by its name, a folder argument's files by the folder's name and
    their path inside it (``people/ada/1.jpg`` from the argument ``people``)."""
    if path == argument:
        return Path(path.name)
    return Path(argument.resolve().name) / path.relative_to(argument)


class Outputs:
    """Where ``--annotate DIR`` writes: the inputs' tree below DIR, each file as
    ``input_name`` says with the output's suffix. A name written earlier in the same run is
    not overwritten (NAME-1, NAME-2...); a file of an earlier run is replaced."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._taken: set[Path] = set()

    def path_for(self, name: Path, suffix: str) -> Path:
        wanted = self.folder / name.with_suffix(suffix)
        out, k = wanted, 1
        while out in self._taken:
            out = wanted.with_name(f"{wanted.stem}-{k}{suffix}")
            k += 1
        self._taken.add(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out


def draw(image: np.ndarray, found: FrameDetections) -> np.ndarray:
    """A copy of ``image`` with each face's box, score and landmarks drawn."""
    out: np.ndarray = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 600))
    for box, score, points in zip(found.bbox_xyxy, found.score, found.landmarks, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        put_label(out, f"{score:.2f}", x1, y1, (0, 255, 0), thickness)
        for x, y in points:
            cv2.circle(out, (round(float(x)), round(float(y))), thickness + 1, (0, 0, 255), -1)
    return out


def put_label(
    image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], thickness: int
) -> None:
    """``text`` just above the point (x, y) (a box's corner), moved inside the image where it
    would leave it (a face at the edge keeps a readable label)."""
    scale = 0.4 * thickness
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = min(max(x, 0), max(image.shape[1] - width, 0))
    y = max(y - 4, height + 2)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness)
