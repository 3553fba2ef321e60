"""The TensorRT plans that `facewatch engines build` makes with the documented options cover
every call the daemon makes: its scheduler runs here on real video, with ONNX Runtime
engines that check each input shape against the profiles the plans would have.

TensorRT itself cannot be installed on the machines available to us; this is the part of
"the plan fits the daemon" that the CPU can check.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import cv2
import numpy as np
import pytest

from daemon.camera_frames import Frame
from daemon.config import WARM_UP_HW, plan_request
from daemon.config_file import parse_config
from daemon.events import EventSinks
from daemon.scheduler import Pipeline
from engines.base import ModelMetadata
from engines.build import BuildOptions, ShapeProfile, model_profiles
from engines.facenet import FaceNet
from engines.mtcnn import MTCNN
from tests.conftest import MODELS


class ProfileChecked:
    """An engine that refuses, as TensorRT would, an input outside the plan's profiles."""

    def __init__(self, engine: Any, profiles: list[ShapeProfile], calls: list[tuple]) -> None:
        self.engine, self.profiles, self.calls = engine, profiles, calls
        self.inputs, self.outputs = engine.inputs, engine.outputs
        self.max_batch = min(p.max[0] for p in profiles)  # as engines.tensorrt says them
        self.max_input_shapes = [p.max for p in profiles]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = tuple(next(iter(feeds.values())).shape)
        assert any(p.covers(shape) for p in self.profiles), (shape, self.profiles)
        self.calls.append(shape)
        return self.engine.infer(feeds)

    def close(self) -> None:
        self.engine.close()


def _checked(
    test_model: Any, options_for: Any, calls: dict[str, list[tuple]]
) -> tuple[MTCNN, FaceNet]:
    """The daemon's engines (ONNX Runtime) refusing what plans built with
    ``options_for(meta)`` would refuse; each call's input shape goes to ``calls``."""
    detector = MTCNN.load(MODELS / "mtcnn", backend="onnxruntime", threads=2, lanes=1)
    for net in ("pnet", "rnet", "onet"):
        meta = ModelMetadata.load(MODELS / "mtcnn" / f"{net}.onnx")
        profiles = model_profiles(meta, "image", options_for(meta))
        setattr(detector, net, ProfileChecked(getattr(detector, net), profiles, calls[net]))
    meta = ModelMetadata.load(test_model)
    checked = ProfileChecked(
        FaceNet.load(test_model, threads=2).engine,
        model_profiles(meta, "image", options_for(meta)),
        calls["facenet"],
    )
    return detector, FaceNet(checked, meta)  # type: ignore[arg-type]


def _crowd(shared_data: Any, frames: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(shared_data / "videos" / "crowd_1080p.mp4"))
    crowd = [capture.read()[1] for _ in range(frames)]
    capture.release()
    return crowd


@pytest.mark.parametrize(
    "batch", [None, (1, 2, 4)], ids=["the daemon's plans", "with --batch 1 2 4"]
)
def test_the_daemons_calls_fit_the_plans(shared_data, test_model, batch) -> None:
    """Built as the daemon asks (``engines.tensorrt``), every call fits; built by hand with
    smaller batches too: the engines split their calls to the plan's largest batch."""
    crowd = _crowd(shared_data, 4)  # full scans at frames 0 and 3, regions between
    small = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in crowd]
    odd = [cv2.resize(f, (640, 480), interpolation=cv2.INTER_AREA) for f in crowd]
    # 16 cameras, as a GPU box runs them: 2 of 1080p, 13 of 360p, and one 4:3 camera that
    # the build was not told of, with its own min_face_size (levels between the profiles')
    streams = {f"big{k}": crowd for k in range(2)} | {f"cam{k}": small for k in range(13)}
    streams["odd"] = odd
    config = parse_config(
        {
            "cameras": [{"name": name, "url": "decoded"} for name in streams if name != "odd"]
            + [{"name": "odd", "url": "decoded", "detection": {"min_face_size": 24}}],
            "batching": {"max_batch": 16},
            "detection": {"full_scan_every": 3},
            "recognition": {"model": str(test_model)},
            "engines": {
                "backend": "tensorrt",
                "tensorrt": {"camera_sizes": ["1920x1080", "640x360"]},
            },
        }
    )
    request = plan_request(config)

    def options_for(meta: ModelMetadata) -> BuildOptions:
        if batch is None:
            return request.options_for(meta)
        return dataclasses.replace(request.options_for(meta), batch=batch)

    calls: dict[str, list[tuple]] = {"pnet": [], "rnet": [], "onet": [], "facenet": []}
    detector, facenet = _checked(test_model, options_for, calls)
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


def test_a_camera_larger_than_the_plan_is_skipped_not_the_daemon(
    shared_data, test_model, caplog
) -> None:
    """A camera sending frames larger than ``engines.tensorrt.camera_sizes`` would stop every
    camera at P-Net's first call; its frames are skipped instead, counted and logged once,
    and the other cameras go on."""
    from daemon import metrics

    crowd = _crowd(shared_data, 3)
    small = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in crowd]
    config = parse_config(
        {
            "cameras": [{"name": "lobby", "url": "decoded"}, {"name": "hall", "url": "decoded"}],
            "recognition": {"model": str(test_model)},
            "engines": {"backend": "tensorrt", "tensorrt": {"camera_sizes": ["1280x720"]}},
        }
    )
    calls: dict[str, list[tuple]] = {"pnet": [], "rnet": [], "onet": [], "facenet": []}
    detector, facenet = _checked(test_model, plan_request(config).options_for, calls)
    assert detector.refuses((720, 1280)) is None and detector.refuses((720, 960)) is None
    assert "pyramid level 1153x649 is larger than P-Net's TensorRT plan takes" in str(
        detector.refuses((1080, 1920))
    )
    pipeline = Pipeline(config, detector, facenet, EventSinks())
    refused = metrics.FRAMES_REFUSED.labels("lobby")
    before = refused._value.get()
    with caplog.at_level(logging.ERROR, logger="daemon.scheduler"):
        for k in range(len(crowd)):
            now = time.time()
            pipeline.process([Frame("lobby", k, now, crowd[k]), Frame("hall", k, now, small[k])])
    assert refused._value.get() - before == len(crowd)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(
        "camera lobby: its 1920x1080 frames are skipped"
    )
    assert "add 1920x1080 to engines.tensorrt.camera_sizes" in errors[0]
    assert calls["pnet"] and all(shape[3] <= 641 for shape in calls["pnet"])  # hall's only
    assert pipeline.trackers["hall"].tracks, "the other camera's faces are tracked"
