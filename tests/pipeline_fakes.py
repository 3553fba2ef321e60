"""Stand-ins the daemon's unit tests share: a pipeline's events recorded, scripted engines
that find one face, and a gallery of two people for their embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daemon.events import EventSinks
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
from engines.mtcnn import FrameDetections


class Recorded(EventSinks):
    """The events a pipeline emits, in order, and with their snapshots in ``sent``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.sent: list[tuple[dict, bytes | None]] = []

    def emit(self, event: dict, snapshot: bytes | None = None) -> None:
        self.events.append(event)
        self.sent.append((event, snapshot))


class OneFace:
    """The scheduler's engines, scripted: one face in the middle of every frame, ``side``
    pixels wide; its embedding is ann's (the first axis). Counts the faces embedded."""

    model_id = "scripted-facenet"

    def __init__(self) -> None:
        self.side, self.embedded = 60.0, 0

    def refuses(self, image_hw: tuple[int, int]) -> None:
        return None

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        half = self.side / 2
        bbox = np.array([[320 - half, 180 - half, 320 + half, 180 + half]], np.float32)
        landmarks = np.zeros((1, 5, 2), np.float32)
        return [FrameDetections(bbox, np.ones(1, np.float32), landmarks) for _ in images]

    def embed_picks(self, picks: list) -> np.ndarray:
        self.embedded += len(picks)
        return np.stack([np.eye(8, dtype=np.float32)[0] for _ in picks])


def gallery_of_ann_and_bob(path: Path, model_id: str) -> None:
    with Gallery.create(path, model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
        gallery.enroll([Enrollment("bob", np.eye(8, dtype=np.float32)[1], "b" * 64)])
