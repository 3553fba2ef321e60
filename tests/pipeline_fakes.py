"""Stand-ins the daemon's unit tests share: a pipeline's events recorded, the scheduler's
engines scripted (the one fake DESIGN.md allows: engines whose outputs a test controls), and
a gallery of two people for their embeddings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from daemon.events import EventSinks
from daemon.gallery import Gallery
from daemon.gallery_write import Enrollment
from daemon.scheduler import Pipeline
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


def found(boxes, landmarks=None) -> FrameDetections:  # type: ignore[no-untyped-def]
    """A frame's faces as the detector gives them: ``boxes`` (x0, y0, x1, y1), each scored 1,
    with ``landmarks`` (5 points each) or all at 0."""
    bbox = np.array(boxes, np.float32).reshape(-1, 4)
    points = np.zeros((len(bbox), 5, 2)) if landmarks is None else landmarks
    return FrameDetections(bbox, np.ones(len(bbox), np.float32), np.array(points, np.float32))


class ScriptedEngines:
    """The scheduler's engines, scripted: a subclass says the faces the detector finds
    (``detect``) and the embeddings FaceNet gives them (``embed_picks``); no frame size is
    refused, and the model id is the gallery's."""

    model_id = "scripted-facenet"

    def refuses(self, image_hw: tuple[int, int]) -> None:
        return None

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        raise NotImplementedError

    def embed_picks(self, picks: list) -> np.ndarray:
        raise NotImplementedError


class OneFace(ScriptedEngines):
    """One face in the middle of every frame, ``side`` pixels wide; its embedding is ann's
    (the first axis). Counts the faces embedded."""

    def __init__(self) -> None:
        self.side, self.embedded = 60.0, 0

    def detect(self, images: list, priors: list | None = None) -> list[FrameDetections]:
        half = self.side / 2
        return [found([(320 - half, 180 - half, 320 + half, 180 + half)]) for _ in images]

    def embed_picks(self, picks: list) -> np.ndarray:
        self.embedded += len(picks)
        return np.stack([np.eye(8, dtype=np.float32)[0] for _ in picks])


def gallery_of_ann_and_bob(path: Path, model_id: str) -> None:
    with Gallery.create(path, model_id, 8) as gallery:
        gallery.enroll([Enrollment("ann", np.eye(8, dtype=np.float32)[0], "a" * 64)])
        gallery.enroll([Enrollment("bob", np.eye(8, dtype=np.float32)[1], "b" * 64)])


@pytest.fixture
def galleries_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The galleries pipelines read on the test's own thread (``reload_gallery``, as the
    scheduler thread does) are closed after the test: each stayed open to the worker's end.
    A scheduler thread's is its own to close (SQLite's rule), as it stops."""
    read: list[Pipeline] = []
    reload = Pipeline.reload_gallery

    def reload_gallery(pipeline: Pipeline) -> None:
        if threading.current_thread() is threading.main_thread():
            read.append(pipeline)
        reload(pipeline)

    monkeypatch.setattr(Pipeline, "reload_gallery", reload_gallery)
    yield
    for pipeline in read:
        pipeline.close_gallery()
