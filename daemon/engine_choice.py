"""Which engines run the detector and FaceNet, and how: one choice for the daemon
(``Service.load_engines``) and for `enroll` / `identify` (``cli_models.load_models``),
so that `identify --config FILE` runs the engines the daemon runs for that file.

MTCNN runs on the backend (``engines.backend``, or the commands' --backend); FaceNet beside
it on ONNX Runtime when that backend is a CPU one, else on the same GPU backend
(``facenet_backend``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from daemon.config import Config, plan_request
from engines.build import PlanRequest
from engines.detectors import load_detector, load_facenet
from engines.facenet import FaceNet
from engines.loader import CPU_BACKENDS, cpu_threads
from engines.mtcnn import MTCNN

logger = logging.getLogger(__name__)


def facenet_backend(backend: str) -> str:
    """FaceNet's backend beside MTCNN's ``backend``: on the CPU its wide layers run best on
    ONNX Runtime (bench/README.md; bf16 precision moves it to OpenVINO, ``FaceNet.load``)."""
    return "onnxruntime" if backend in CPU_BACKENDS else backend


def say_plan_build(onnx_path: Path) -> None:
    """Before a TensorRT plan is built (minutes): say so."""
    logger.warning(
        "building the TensorRT plan for %s (minutes; once, until the model, TensorRT, the GPU "
        "or engines.tensorrt changes; `facewatch engines build --config` does it ahead)",
        onnx_path,
    )


@dataclass(frozen=True)
class EngineChoice:
    """The backend and settings both models are loaded with."""

    mtcnn_dir: Path
    backend: str = "openvino"
    threads: int = 0  # as cpu_threads counts them: 0 is all the cores this process may use
    precision: str = "auto"  # FaceNet's on a CPU backend
    flip: bool = False
    trt_plans: PlanRequest | None = None  # None: the tensorrt backend opens the newest plans
    detection: dict[str, Any] = field(default_factory=dict)  # MTCNNConfig fields

    @classmethod
    def of_config(
        cls,
        config: Config,
        config_path: str | Path | None = None,
        threads: int | None = None,
        on_build: Callable[[Path], None] = say_plan_build,
    ) -> EngineChoice:
        """The daemon's engines for ``config``: ``engines`` (backend, threads unless
        ``threads`` is given, mtcnn_dir, the TensorRT plans it asks for), ``detection``'s
        detector settings, ``recognition``'s precision and flip. Sets what the process's
        engines read: OpenCV's thread pool, and the torch keys' FACEWATCH_TORCH_* variables."""
        engines = config.engines
        count = cpu_threads(engines.threads if threads is None else threads)
        # OpenCV's own pool (resizes, colour conversions, the alignment's warps) to the same
        # budget: it counts the host's cores, and misses systemd's CPUQuota=
        cv2.setNumThreads(count)
        os.environ.update(engines.torch_environment())  # what the torch backend reads
        trt_plans = None
        if engines.backend == "tensorrt":
            trt_plans = plan_request(config, config_path, on_build=on_build)
        detection = config.detection
        return cls(
            mtcnn_dir=Path(engines.mtcnn_dir),
            backend=engines.backend,
            threads=count,
            precision=config.recognition.precision,
            flip=config.recognition.flip,
            trt_plans=trt_plans,
            detection={
                "min_face_size": detection.min_face_size,
                "thresholds": detection.thresholds,
                "scale_factor": detection.scale_factor,
            },
        )

    def detector(self) -> MTCNN:
        return load_detector(
            self.mtcnn_dir,
            backend=self.backend,
            threads=self.threads,
            trt_plans=self.trt_plans,
            **self.detection,
        )

    def facenet(self, model: Path) -> FaceNet:
        return load_facenet(
            model,
            backend=facenet_backend(self.backend),
            threads=self.threads,
            flip=self.flip,
            precision=self.precision,
            trt_plans=self.trt_plans,
        )

    def said(self, facenet: FaceNet | None) -> str:
        """Which engines run, for the logs: 'detector MTCNN on openvino, FaceNet ID fp32 on
        onnxruntime'."""
        run = "no FaceNet (detection only)"
        if facenet is not None:
            run = f"FaceNet {facenet.model_id} {facenet.runs_as}"
        return f"detector MTCNN on {self.backend}, {run}"
