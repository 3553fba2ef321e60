"""The daemon's configuration: the schema one YAML file is validated against.

Every field has a default, bounds where they make sense, and a one-line description (shown
by ``facewatch validate-config --schema``). Unknown keys are errors. Reading a file (YAML,
``${NAME}`` and ``${credential:NAME}`` references, error messages that name the key path,
relative paths) is ``daemon.config_file``'s; the messages are ``daemon.config_errors``'.

This module holds the root (``Config``), the file a command reads by default and the
TensorRT plans a config asks for; the sections are ``daemon.config_cameras``' (cameras,
detection), ``daemon.config_pipeline``'s (recognition, batching, engines, tracking) and
``daemon.config_outputs``' (mqtt, metrics, events, logging, archive).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from daemon.config_cameras import CameraConfig, DetectionConfig, MotionConfig, _a_name, _camera_key
from daemon.config_outputs import (
    ArchiveConfig,
    EventsConfig,
    LoggingConfig,
    MetricsConfig,
    MqttConfig,
)
from daemon.config_pipeline import BatchingConfig, EnginesConfig, RecognitionConfig, TrackingConfig
from daemon.config_section import Section, _field
from engines.build import PlanRequest
from engines.loader import CPU_BACKENDS, data_root
from engines.plan_cache import default_cache_dir

DEFAULT_CONFIG = data_root() / "configs" / "default.yaml"
SERVICE_CONFIG = Path("/etc/facewatch/facewatch.yaml")  # the systemd unit's
# the config a command reads without --config (config_choice), as its --help says it
CHOSEN_CONFIG = (
    f"$FACEWATCH_CONFIG, else {SERVICE_CONFIG} when there is one, else the demo's {DEFAULT_CONFIG}"
)


def running_config() -> Path:
    """The config of the daemon that `run`, `status` and `archive` take by default:
    $FACEWATCH_CONFIG, else the service's when this machine has one, else the demo's."""
    return config_choice()[0]


def config_choice() -> tuple[Path, str]:
    """``running_config()``, and why it is that one (for the log: a container that set
    $FACEWATCH_CONFIG ran the demo)."""
    env = os.environ.get("FACEWATCH_CONFIG")
    if env:
        return Path(env), "named by $FACEWATCH_CONFIG (no --config given)"
    try:
        if SERVICE_CONFIG.is_file():
            return SERVICE_CONFIG, "the service's (no --config given, no $FACEWATCH_CONFIG)"
    except OSError:  # /etc/facewatch is 0750: this user may not look (then: the demo's)
        pass
    return DEFAULT_CONFIG, (
        f"the demo's (no --config given, no $FACEWATCH_CONFIG, no {SERVICE_CONFIG})"
    )


WARM_UP_HW = (240, 320)  # the frame the daemon warms its engines up with


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key path."""


class Config(Section):
    node_id: str = _field(
        "facewatch",
        "this daemon's name in topics and metrics, and its MQTT client id facewatch-NODE_ID "
        "(each daemon on a broker needs its own): letters, digits, _ and - (1 to 64), "
        "not starting with -, with a letter or digit",
    )
    _node = field_validator("node_id")(_a_name)
    cameras: Annotated[list[CameraConfig], Field(min_length=1)] = Field(
        description="the cameras to read (at least one)"
    )
    detection: DetectionConfig = _field(DetectionConfig(), "MTCNN settings")
    recognition: RecognitionConfig = _field(RecognitionConfig(), "FaceNet and the gallery")
    batching: BatchingConfig = _field(BatchingConfig(), "how frames are grouped for inference")
    engines: EnginesConfig = _field(EnginesConfig(), "inference backends")
    tracking: TrackingConfig = _field(TrackingConfig(), "tracks and when events are sent")
    mqtt: MqttConfig = _field(MqttConfig(), "the MQTT broker")
    metrics: MetricsConfig = _field(MetricsConfig(), "the Prometheus endpoint")
    events: EventsConfig = _field(EventsConfig(), "extra event outputs")
    archive: ArchiveConfig = _field(ArchiveConfig(), "the face archive: each visit's faces on disk")
    logging: LoggingConfig = _field(LoggingConfig(), "logging")

    @field_validator("engines")
    @classmethod
    def _engine_settings_fit_backend(
        cls, engines: EnginesConfig, info: ValidationInfo
    ) -> EnginesConfig:
        if engines.backend != "torch":
            for key in ("torch_device", "fp16", "cuda_graphs"):
                if getattr(engines, key) is not None:
                    raise ValueError(
                        f"{key} is a setting of the torch backend, not {engines.backend}"
                    )
        if engines.backend != "tensorrt" and "tensorrt" in engines.model_fields_set:
            raise ValueError(
                f"tensorrt holds settings of the tensorrt backend, not {engines.backend}"
            )
        trt = engines.tensorrt
        if (trt.precision == "int8") != (trt.calib_dir is not None):
            raise ValueError(
                "tensorrt.precision int8 needs tensorrt.calib_dir (images to calibrate with)"
                if trt.precision == "int8"
                else f"tensorrt.calib_dir is for int8 only, not {trt.precision}"
            )
        recognition = info.data.get("recognition")
        bf16 = recognition is not None and recognition.precision == "bf16"
        if bf16 and engines.backend not in CPU_BACKENDS:
            raise ValueError(
                f"backend {engines.backend} runs FaceNet on the GPU: recognition.precision "
                "bf16 is for the CPU backends (use auto or fp32)"
            )
        return engines

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        names = [c.name for c in cameras]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"camera names must be unique; repeated: {', '.join(twice)}")
        by_key: dict[str, list[int]] = {}
        for k, name in enumerate(names):
            by_key.setdefault(_camera_key(name), []).append(k)
        for same in (ks for ks in by_key.values() if len(ks) > 1):
            both = " and ".join(f"cameras[{k}] ({names[k]})" for k in same)
            raise ValueError(
                f"{both}: names that differ only in case or in '-' against '_' are one name to "
                f"Home Assistant (binary_sensor.{_camera_key(names[same[0]])}_face for each) and "
                "to a case-insensitive disk: rename one"
            )
        if not any(c.enabled for c in cameras):
            raise ValueError("every camera is disabled (enabled: false): enable at least one")
        return cameras

    def min_face_px(self, camera: CameraConfig) -> float:
        """The smallest face ``camera``'s tracks are recognised from: its own, else
        ``recognition.min_face_px``."""
        own = camera.recognition.min_face_px
        return self.recognition.min_face_px if own is None else own

    def motion(self, camera: CameraConfig) -> MotionConfig:
        """``camera``'s motion gate: its own settings, the others from ``detection.motion``."""
        own = camera.detection.motion.model_dump(exclude_none=True)
        return self.detection.motion.model_copy(update=own)


def plan_request(
    config: Config,
    config_path: str | Path | None = None,
    on_build: Callable[[Path], None] | None = None,
) -> PlanRequest:
    """The TensorRT plans this config's daemon opens (and `facewatch engines build --config`
    builds): ``engines.tensorrt``'s precision and camera sizes (and the warm-up frame's), the
    smallest ``min_face_size`` of any enabled camera, ``batching.max_batch`` frames per
    P-Net call."""
    trt = config.engines.tensorrt
    faces = [config.detection.min_face_size] + [
        c.detection.min_face_size
        for c in config.cameras
        if c.enabled and c.detection.min_face_size is not None
    ]
    return PlanRequest(
        precision=trt.precision,
        camera_hw=(*trt.camera_hw(), WARM_UP_HW),
        min_face_size=min(faces),
        scale_factor=config.detection.scale_factor,
        frames_per_call=config.batching.max_batch,
        workspace_bytes=trt.workspace_mb << 20,
        calib_dir=trt.calib_dir,
        calib_images=trt.calib_images,
        cache_dir=str(default_cache_dir()),
        build=trt.build == "auto",
        build_command=f"facewatch engines build --config {config_path or 'CONFIG'}",
        on_build=on_build,
    )
