"""The TensorRT plans that `facewatch engines build` makes with the documented options cover
every call the daemon makes: its scheduler runs here on real video, with ONNX Runtime
engines that check each input shape against the profiles the plans would have.

TensorRT itself cannot be installed on the machines available to us; this is the part of
"the plan fits the daemon" that the CPU can check.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import pytest

from daemon.cameras import Frame
from daemon.config import parse_config
from daemon.engines_cli import default_batch
from daemon.events import EventSinks
from daemon.scheduler import Pipeline
from engines.base import ModelMetadata
from engines.build import BuildOptions, ShapeProfile, model_profiles
from engines.facenet import FaceNet
from engines.mtcnn import MTCNN
from tests.conftest import MODELS

WARM_UP_HW = (240, 320)  # the frame the daemon warms the engines up with


class ProfileChecked:
    """An engine that refuses, as TensorRT would, an input outside the plan's profiles."""

    def __init__(self, engine: Any, profiles: list[ShapeProfile], calls: list[tuple]) -> None:
        self.engine, self.profiles, self.calls = engine, profiles, calls
        self.inputs, self.outputs = engine.inputs, engine.outputs
        self.max_batch = min(p.max[0] for p in profiles)  # as engines.tensorrt says it

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = tuple(next(iter(feeds.values())).shape)
        assert any(p.covers(shape) for p in self.profiles), (shape, self.profiles)
        self.calls.append(shape)
        return self.engine.infer(feeds)

    def close(self) -> None:
        self.engine.close()


def _profiles(
    meta: ModelMetadata, cameras: tuple[tuple[int, int], ...], batch: tuple[int, int, int] | None
) -> list[ShapeProfile]:
    """The profiles of `facewatch engines build MODEL [--camera WxH ...] [--batch ...]`."""
    options = BuildOptions(batch=batch or default_batch(meta), camera_hw=cameras)
    return model_profiles(meta, "image", options)


@pytest.mark.parametrize(
    "batch", [None, (1, 2, 4)], ids=["documented commands", "with --batch 1 2 4"]
)
def test_the_daemons_calls_fit_the_plans(shared_data, test_model, batch) -> None:
    """Built as docs/operations.md says, every call fits; built with smaller batches too:
    the engines split their calls to the plan's largest batch (``max_batch``)."""
    capture = cv2.VideoCapture(str(shared_data / "videos" / "crowd_1080p.mp4"))
    crowd = [capture.read()[1] for _ in range(6)]
    capture.release()
    small = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in crowd]
    odd = [cv2.resize(f, (640, 480), interpolation=cv2.INTER_AREA) for f in crowd]
    # 16 cameras, as a GPU box runs them: 2 of 1080p, 13 of 360p, and one 4:3 camera that
    # the build was not told of, with its own min_face_size (levels between the profiles')
    streams = {f"big{k}": crowd for k in range(2)} | {f"cam{k}": small for k in range(13)}
    streams["odd"] = odd
    cameras_hw = ((1080, 1920), (360, 640), WARM_UP_HW)
    calls: dict[str, list[tuple]] = {"pnet": [], "rnet": [], "onet": [], "facenet": []}
    detector = MTCNN.load(MODELS / "mtcnn", backend="onnxruntime", threads=2, lanes=1)
    for net in ("pnet", "rnet", "onet"):
        meta = ModelMetadata.load(MODELS / "mtcnn" / f"{net}.onnx")
        profiles = _profiles(meta, cameras_hw if net == "pnet" else (), batch)
        setattr(detector, net, ProfileChecked(getattr(detector, net), profiles, calls[net]))
    checked = ProfileChecked(
        FaceNet.load(test_model, threads=2).engine,
        _profiles(ModelMetadata.load(test_model), (), batch),
        calls["facenet"],
    )
    facenet = FaceNet(checked, ModelMetadata.load(test_model))  # type: ignore[arg-type]
    config = parse_config(
        {
            "cameras": [{"name": name, "url": "decoded"} for name in streams if name != "odd"]
            + [{"name": "odd", "url": "decoded", "detection": {"min_face_size": 24}}],
            "batching": {"max_batch": 16},
            "detection": {"full_scan_every": 3},
            "recognition": {"model": str(test_model)},
        }
    )
    pipeline = Pipeline(config, detector, facenet, EventSinks())
    detector.detect([np.zeros((*WARM_UP_HW, 3), np.uint8)])  # the daemon's warm-up
    for k in range(len(crowd)):
        pipeline.process([Frame(n, k, time.time(), f[k]) for n, f in streams.items()])
    # every call fitted (ProfileChecked); and they were the ones that matter:
    levels = [shape[0] for shape in calls["pnet"] if shape[2] != shape[3]]
    regions = [shape[0] for shape in calls["pnet"] if shape[2] == shape[3]]
    if batch is None:
        assert 2 <= max(levels) <= 16  # small pyramid levels of several frames in one call
        assert max(regions) == 32  # a batch's regions around known faces, split to MAX
    else:
        assert max(levels) == max(regions) == 4  # split to the plan's largest batch
        assert max(shape[0] for shape in calls["facenet"]) == 4
    assert calls["rnet"] and calls["onet"] and calls["facenet"]
