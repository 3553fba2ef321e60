"""The daemon's configuration: the schema one YAML file is validated against.

Every field has a default, bounds where they make sense, and a one-line description (shown
by ``facewatch validate-config --schema``). Unknown keys are errors. Reading a file (YAML,
``${NAME}`` and ``${credential:NAME}`` references, error messages that name the key path,
relative paths) is ``daemon.config_file``'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from daemon.recognition import MAX_PROFILE_OFFSET
from engines.base import bounds_text, within
from engines.boxes import polygon_area, polygon_crosses_itself
from engines.build import PlanRequest, camera_size_hw
from engines.loader import CPU_BACKENDS, THREAD_BOUNDS, data_root, default_models_dir
from engines.mtcnn import (
    MIN_FACE_SIZE_BOUNDS,
    SCALE_FACTOR_BOUNDS,
    THRESHOLD_BOUNDS,
    MTCNNConfig,
)
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
# Faces below this are not matched. Against a 72-person gallery, crowd faces under 30 px were
# named as somebody 29 % of the time (strangers all), and the demo clip's 25 px face of Alex
# Lacamoire matched another person in 11 frames of 14; Lin-Manuel Miranda's smallest face
# there, 36 px, still names him. Enroll's own minimum, 40 px, would have left him unnamed.
MIN_RECOGNISED_FACE_PX = 30.0
STREAM_SCHEMES = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "file"}
)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field(default: Any, description: str, **bounds: Any) -> Any:
    return Field(default=default, description=description, **bounds)


def _switch(value: Any) -> Any:
    """``motion: false`` for ``motion: {enabled: false}`` (and true for on)."""
    return {"enabled": value} if isinstance(value, bool) else value


class MotionConfig(Section):
    enabled: bool = _field(
        True,
        "skip the detector on a camera's frames where nothing moved while it sees no face "
        "(most of a quiet camera's frames: a fraction of the CPU)",
    )
    min_change_levels: float = _field(
        15.0,
        "grey levels (of 255) a pixel must change by to count as changed, on a 320 px wide "
        "blurred copy of the frame",
        gt=0,
        lt=255,
    )
    min_area_fraction: float = _field(
        0.002, "fraction of the frame that must change for a frame to count as moved", ge=0, lt=1
    )
    check_every_s: float = _field(
        10.0,
        "search a still frame anyway at least this often (someone who stands still: in view "
        "when the daemon or camera started)",
        gt=0,
        le=3600,
    )


class MotionOverrides(Section):
    enabled: bool | None = _field(None, "this camera's motion.enabled; null = detection.motion's")
    min_change_levels: float | None = _field(
        None, "this camera's motion.min_change_levels", gt=0, lt=255
    )
    min_area_fraction: float | None = _field(
        None, "this camera's motion.min_area_fraction", ge=0, lt=1
    )
    check_every_s: float | None = _field(None, "this camera's motion.check_every_s", gt=0, le=3600)


class DetectionConfig(Section):
    """MTCNN's settings: their defaults and bounds are the detector's (``engines.mtcnn``)."""

    min_face_size: float = _field(
        MTCNNConfig.min_face_size, "smallest face to find, in pixels", **MIN_FACE_SIZE_BOUNDS
    )
    thresholds: tuple[float, float, float] = _field(
        MTCNNConfig.thresholds, "P-Net, R-Net, O-Net score thresholds, each in (0, 1)"
    )
    scale_factor: float = _field(
        MTCNNConfig.scale_factor, "image pyramid step", **SCALE_FACTOR_BOUNDS
    )
    full_scan_every: int = _field(
        1,
        "search each camera's whole frame every N frames, and in between only around the "
        "faces it tracks (N > 1: a fraction of the CPU; another face found up to N-1 frames "
        "later); a camera that tracks no one has the first N frames that moved after a still "
        "one searched whole (someone coming in is found at once), then, while its view moves "
        "on, every Nth; without the motion gate, every Nth frame only (someone coming in "
        "found up to N-1 frames later)",
        ge=1,
        le=100,
    )
    motion: MotionConfig = _field(
        MotionConfig(),
        "the motion gate: still frames of a camera with no face in view (true / false: on or "
        "off with the other settings' defaults)",
    )
    _motion_switch = field_validator("motion", mode="before")(_switch)

    @field_validator("thresholds")
    @classmethod
    def _in_unit_interval(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(within(t, THRESHOLD_BOUNDS) for t in value):
            raise ValueError(
                f"each threshold must be {bounds_text(THRESHOLD_BOUNDS)}, got {list(value)}"
            )
        return value


IGNORE_SHAPE = (
    "expected a list of regions, each a list of [x, y] corners, e.g. "
    "[[[0.7, 0.05], [0.95, 0.05], [0.95, 0.4], [0.7, 0.4]]]"
)


class DetectionOverrides(Section):
    min_face_size: float | None = _field(
        None, "this camera's smallest face", **MIN_FACE_SIZE_BOUNDS
    )
    motion: MotionOverrides = _field(
        MotionOverrides(),
        "this camera's motion gate settings (those not given: detection's; true / false: on "
        "or off)",
    )
    _motion_switch = field_validator("motion", mode="before")(_switch)
    ignore: list[list[tuple[float, float]]] = _field(
        [],
        "regions whose faces are dropped (a poster, a TV, a mirror): polygons of 3 or more "
        "[x, y] corners, each 0..1 of the frame's width and height; a face is dropped when the "
        "centre of its box (of the part inside the frame) lies inside one",
    )

    @field_validator("ignore", mode="before")
    @classmethod
    def _shape(cls, regions: Any) -> Any:
        def number(value: Any) -> bool:
            if isinstance(value, str):  # e.g. from ${VAR}: pydantic converts it
                try:
                    float(value)
                except ValueError:
                    return False
                return True
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        def corner(value: Any) -> bool:
            return isinstance(value, (list, tuple)) and len(value) == 2 and all(map(number, value))

        def region(value: Any) -> bool:
            return isinstance(value, (list, tuple)) and all(corner(c) for c in value)

        if not (isinstance(regions, (list, tuple)) and all(region(r) for r in regions)):
            raise ValueError(IGNORE_SHAPE)
        return regions

    @field_validator("ignore")
    @classmethod
    def _polygons(
        cls, polygons: list[list[tuple[float, float]]]
    ) -> list[list[tuple[float, float]]]:
        for k, polygon in enumerate(polygons):
            if len(polygon) < 3:
                raise ValueError(
                    f"region {k}: expected 3 or more [x, y] corners, got {len(polygon)}"
                )
            outside = [list(p) for p in polygon if not all(0.0 <= v <= 1.0 for v in p)]
            if outside:
                raise ValueError(
                    f"region {k}: corners are fractions of the frame's width and height (0..1: "
                    f"x in pixels / width, y / height), got {outside[0]}"
                )
            if polygon_crosses_itself(np.array(polygon)):
                raise ValueError(
                    f"region {k}: its edges cross: list the corners in order around it"
                )
            if polygon_area(np.array(polygon)) < 1e-6:
                raise ValueError(f"region {k}: encloses no area")
        return polygons


class RecognitionOverrides(Section):
    min_face_px: float | None = _field(
        None, "this camera's smallest face recognised", ge=0, le=10000
    )
    threshold: float | None = _field(
        None,
        "this camera's distance threshold, in place of recognition.threshold (or the "
        "gallery's): lower it for a night, blurred or low-bitrate camera, whose poor faces "
        "are named as the wrong person more often; a person's own threshold (`gallery "
        "threshold NAME`) still holds where it is stricter",
        gt=0,
        le=4,
    )


def _a_name(name: str) -> str:
    """A camera name or node_id: it goes into MQTT topics, metric labels, folder names and
    command lines (a name starting with '-' reads as an option there; '_' was allowed first
    before, and stays)."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", name) is None or not re.search(
        r"[A-Za-z0-9]", name
    ):
        raise ValueError(
            "letters, digits, '_' and '-' only, not starting with '-', with a letter or digit, "
            "1 to 64 of them (it goes into MQTT topics, metric labels and command lines)"
        )
    return name


def _camera_key(name: str) -> str:
    """What Home Assistant makes of a camera name in its entity ids (``front-door`` and
    ``Front_Door`` are both ``front_door``), and a case-insensitive disk of its folder."""
    return name.lower().replace("-", "_")


class CameraConfig(Section):
    name: str = Field(
        description="camera name: letters, digits, _ and - (1 to 64), not starting with -, with "
        "a letter or digit, told apart from the others by more than case or - against _; used in topics, "
        "metrics, logs, folder names and Home Assistant's entity ids",
    )
    _name = field_validator("name")(_a_name)
    url: str = Field(description="rtsp://... URL, a video file, or a V4L2 device (/dev/videoN)")
    fps: float = _field(5.0, "frames per second to process (the stream is decimated)", gt=0, le=60)
    enabled: bool = _field(True, "read this camera")
    rotate: Literal[0, 90, 180, 270] = _field(
        0,
        "turn each frame clockwise by this many degrees, for a camera mounted sideways or "
        "upside down (MTCNN and FaceNet find and name upright faces only); everything after "
        "refers to the turned frame: detection.ignore regions, boxes in events, snapshots, "
        "the face archive (the camera's own rotation or corridor mode, where it has one, "
        "costs no CPU here)",
    )
    brighten_dark: bool = _field(
        True,
        "lift the levels of a dark frame (its brightest 1 % under grey 80 of 255: a night "
        "camera short of gain) before detection, which finds most of its faces again; a lit "
        "person in it keeps their contrast, and a brighter frame is left exactly as it is",
    )
    detection: DetectionOverrides = _field(DetectionOverrides(), "per-camera detection settings")
    recognition: RecognitionOverrides = _field(
        RecognitionOverrides(), "per-camera recognition settings"
    )

    @field_validator("rotate", mode="before")
    @classmethod
    def _degrees(cls, value: object) -> object:
        """``${ROTATE}`` gives a string, as it does for fps: "90" is 90."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.strip():
            raise ValueError("empty: expected an rtsp://... URL, a video file or /dev/videoN")
        scheme, found, _ = url.partition("://")
        if not found:
            # a camera's address without its scheme (192.168.1.50:554/stream, cam.lan:554/1)
            if (
                re.fullmatch(r"[A-Za-z0-9.\-]+:[0-9]+(/.*)?", url)
                or re.fullmatch(r"[0-9]+(\.[0-9]+){3}(/.*)?", url)
                or re.fullmatch(r"\[[0-9A-Fa-f:.]+(%[\w.-]+)?\](:[0-9]+)?(/.*)?", url)
            ):
                raise ValueError(f"no scheme: did you mean rtsp://{url} ?")
            return url
        if scheme.lower() not in STREAM_SCHEMES:
            raise ValueError(
                f"unknown scheme {scheme + '://'!r}: expected one of "
                f"{', '.join(s + '://' for s in sorted(STREAM_SCHEMES))}, a video file or /dev/videoN"
            )
        encode = "a password holding / ? # must be written percent-encoded (%2F %3F %23)"
        if "#" in url:
            raise ValueError(f"a '#' in a camera URL ends it there: {encode}")
        try:
            urlsplit(url).port  # noqa: B018  (parsing it is the check)
        except ValueError as exc:  # a bracket left open, a port that is no number
            rest = url.partition("://")[2]
            netloc = rest.split("/", 1)[0]
            # (an @ after the first / only: a password holding a /, where the host is unknown)
            host = netloc.rpartition("@")[2] if "@" in netloc or "@" not in rest else ""
            if host.count(":") > 1 and "[" not in host:  # rtsp://fd00::10:554/1
                raise ValueError(
                    "an IPv6 address is written in brackets, the port after them: "
                    f"{scheme}://[fd00::10]:554/PATH"
                ) from None
            why = "no port number after the host's ':'" if "Port" in str(exc) else str(exc)
            raise ValueError(f"cannot be read as a URL ({why}): {encode}") from None
        return url


class RecognitionConfig(Section):
    model: str | None = _field(
        "auto",
        "FaceNet ONNX model; 'auto' = facenet/facenet.onnx in $FACEWATCH_MODELS (else the "
        "repository's models/) when present, else detection only (an error when the gallery "
        "holds people: their model is missing); null = detection only",
    )
    gallery: str = _field("gallery.sqlite", "enrolled people (SQLite); relative to the config")
    threshold: float | None = _field(
        None,
        "distance threshold; null = the gallery's own (set by `gallery calibrate`)",
        gt=0,
        le=4,
    )
    flip: bool = _field(
        False,
        "also embed mirrored faces and average (2x the FaceNet work; the model's threshold "
        "was measured without: `facewatch gallery calibrate` a flip gallery)",
    )
    precision: Literal["auto", "fp32", "bf16"] = _field(
        "auto",
        "FaceNet arithmetic on the CPU backends: bf16 runs it on OpenVINO, about 2x faster on "
        "CPUs with native bf16 (AVX512_BF16, AMX), embeddings within a cosine of about 0.999 "
        "of fp32 (the same gallery serves both); auto = bf16 where the CPU has it, else fp32",
    )
    reembed_every: int = _field(
        10, "re-embed a resolved track's face every N processed frames", ge=1, le=10000
    )
    min_face_px: float = _field(
        MIN_RECOGNISED_FACE_PX,
        "smallest face recognised: shorter side of the face box, pixels; a smaller face is "
        "tracked but not matched (no vote: its track keeps the votes it has, and one never "
        "matched is announced with identity null); 0 recognises every face found",
        ge=0,
        le=10000,
    )
    max_turn: float | None = _field(
        MAX_PROFILE_OFFSET,
        "most a face may be turned to the side and still be recognised: how far its nose "
        "lies off the middle of its eyes, in half eye distances (0 straight on, about 2 a "
        "profile; enroll refuses photos beyond the same 1.5); a face turned further, once "
        "its track is announced by a vote, is tracked but not matched (no vote: a "
        "turned-away face matches nobody, which is no evidence that it is someone else, so "
        "an enrolled person who turns away is not changed to unknown); before, it votes (a "
        "stranger who crosses the view side-on is announced while there); null matches every "
        "face however turned",
        ge=0,
        le=10,
    )


class BatchingConfig(Section):
    max_batch: int = _field(
        2,
        "most frames in one detection batch: 2 on the CPU (larger batches are slower per "
        "frame there), 8-16 on a GPU",
        ge=1,
        le=256,
    )
    max_wait_ms: float = _field(
        0.0,
        "longest wait to fill a batch after its first frame: 0 on the CPU (take what is "
        "there), 10-50 on a GPU",
        ge=0,
        le=5000,
    )
    queue_frames: int = _field(
        2, "newest frames kept per camera; older ones are dropped", ge=1, le=100
    )


class TensorRTConfig(Section):
    precision: Literal["fp32", "fp16", "int8"] = _field(
        "fp16",
        "arithmetic of the plans: fp16 is about twice fp32's speed on the GPU; int8 (P-Net "
        "only, calibrated on calib_dir's frames; the others run fp16)",
    )
    camera_sizes: Annotated[list[str], Field(min_length=1)] = _field(
        ["1920x1080"],
        "frame sizes (WxH) P-Net's plan is built for: it takes any frame up to the largest "
        "width and height here; a camera sending larger frames is skipped, with an error",
    )
    build: Literal["auto", "never"] = _field(
        "auto",
        "auto: build a missing plan at start (minutes: after a change of model, TensorRT, GPU "
        "or these settings); never: stop instead, naming `facewatch engines build --config`",
    )
    workspace_mb: int = _field(1024, "TensorRT's builder workspace", ge=1, le=1 << 20)
    calib_dir: str | None = _field(
        None, "int8: folder of camera images to calibrate with; relative to the config"
    )
    calib_images: int = _field(256, "int8: at most this many of them", ge=1, le=100_000)

    @field_validator("camera_sizes")
    @classmethod
    def _sizes(cls, sizes: list[str]) -> list[str]:
        for size in sizes:
            camera_size_hw(size)  # a ValueError says what it expected
        return sizes

    def camera_hw(self) -> tuple[tuple[int, int], ...]:
        """``camera_sizes`` as (height, width) pairs."""
        return tuple(camera_size_hw(size) for size in self.camera_sizes)


class EnginesConfig(Section):
    backend: Literal["openvino", "opencv", "onnxruntime", "tensorrt", "torch"] = _field(
        "openvino",
        "backend for MTCNN (FaceNet runs on onnxruntime, or OpenVINO where recognition.precision "
        "picks bf16, unless tensorrt or torch)",
    )
    threads: int = _field(
        0,
        "CPU threads for inference (0 = all the cores facewatch may use: its CPU affinity, "
        "and its cgroup's CPU quota, e.g. systemd's CPUQuota=)",
        **THREAD_BOUNDS,
    )
    mtcnn_dir: str = _field(str(default_models_dir() / "mtcnn"), "folder with pnet/rnet/onet.onnx")
    torch_device: str | None = _field(
        None,
        "torch backend: cuda, cuda:N or cpu (default: $FACEWATCH_TORCH_DEVICE, else cuda "
        "when available)",
        pattern=r"^(cpu|cuda(:[0-9]+)?)$",
    )
    fp16: bool | None = _field(
        None,
        "torch backend: fp16 autocast on CUDA, embeddings within a cosine of 0.995 of fp32 "
        "(default: $FACEWATCH_TORCH_FP16, else off)",
    )
    cuda_graphs: bool | None = _field(
        None,
        "torch backend: replay each input shape as a CUDA graph (fewer kernel launches; "
        "default: $FACEWATCH_TORCH_CUDA_GRAPHS, else off)",
    )
    tensorrt: TensorRTConfig = _field(
        TensorRTConfig(), "tensorrt backend: how the daemon's plans are built and found"
    )

    def torch_environment(self) -> dict[str, str]:
        """The FACEWATCH_TORCH_* variables the torch backend reads, for the keys that are set
        (the others leave the environment's)."""
        values = {
            "FACEWATCH_TORCH_DEVICE": self.torch_device,
            "FACEWATCH_TORCH_FP16": None if self.fp16 is None else str(int(self.fp16)),
            "FACEWATCH_TORCH_CUDA_GRAPHS": (
                None if self.cuda_graphs is None else str(int(self.cuda_graphs))
            ),
        }
        return {name: value for name, value in values.items() if value is not None}


class TrackingConfig(Section):
    iou_threshold: float = _field(
        0.3,
        "least IoU with where the track's face should be (its last box moved at its "
        "velocity, at most one face width), or with its last box, to continue the track",
        gt=0,
        lt=1,
    )
    max_shift: float = _field(
        1.0,
        "a face whose box does not overlap where its track's face should be (nor its last "
        "box) still continues the track when it is at most this many face widths from either "
        "(low fps, a turn, a stop); 0 = IoU only",
        ge=0,
        le=5,
    )
    confirm_frames: int = _field(
        3,
        "frames a face must be seen before its track is announced; a recognised face also "
        "waits for its vote (one recognition a frame): a known face is announced after "
        "max(confirm_frames, min_votes) frames, a stranger after unknown_votes, so below "
        "min_votes it names no one sooner and only lets brief detections through (each a "
        "confirmed with identity null as it leaves, and its left)",
        ge=1,
        le=100,
    )
    lost_after_s: float = _field(
        2.0,
        "a track not seen for this long, in its camera's frames, has left (a camera that stalls "
        "holds its tracks up to 10 s); one whose face comes back after a gap as someone else "
        "leaves at once: it and the next face named by the gallery as another enrolled "
        "person, or a stranger's both farther than 1.5 times its threshold from the track's "
        "faces (most strangers are not: they continue the track, renamed by the votes)",
        gt=0,
        le=3600,
    )
    vote_window: int = _field(
        15, "recent recognitions that vote on a track's identity", ge=1, le=1000
    )
    min_votes: int = _field(
        3,
        "votes a name needs, and a majority of the votes so far, before a face is announced "
        "by it, or changed to it (at most vote_window); one a frame, so a known face is "
        "announced after max(confirm_frames, min_votes) frames (fewer: sooner, but a "
        "near-threshold frame or two can name a stranger)",
        ge=1,
        le=1000,
    )
    unknown_votes: int = _field(
        5,
        "votes for nobody, and a majority, a face needs before it is first announced unknown "
        "(at most vote_window counts): a known face first seen turned away for fewer "
        "recognitions is not announced a stranger, then named",
        ge=1,
        le=1000,
    )
    switch_margin: int = _field(
        4,
        "votes by which another identity must outnumber a track's announced one before the "
        "track changes it (a tie keeps it: a face near the threshold does not flip between a "
        "name and unknown); at most a third of the votes held counts",
        ge=1,
        le=1000,
    )
    snapshots: bool = _field(False, "publish a JPEG of the face with each identity event")
    end_at_scene_cuts: bool = _field(
        True,
        "a frame whose picture is unlike its camera's frame before nearly everywhere, and "
        "the next frame like it (an edited video's cut, a camera turned to another view), "
        "ends the camera's tracks (left, reason cut): a face where another was before it "
        "starts its own visit, not the other's, under the other's name",
    )

    @field_validator("min_votes")
    @classmethod
    def _reachable(cls, min_votes: int, info: ValidationInfo) -> int:
        window = info.data.get("vote_window")
        if window is not None and min_votes > window:
            raise ValueError(
                f"{min_votes} votes can never be reached in a window of vote_window: {window} "
                "recognitions (nobody would be named): raise vote_window too"
            )
        return min_votes


class ArchiveConfig(Section):
    dir: str | None = _field(
        None,
        "keep the faces of each visit (a track, from its first frame to `left`) here, one "
        "folder per visit, to review and to enroll from; null = off; relative to the config; "
        "the daemon owns it (it deletes old visits while it runs: set back to null, the "
        "visits kept so far stay, for `rm -r` or `facewatch archive prune --dir`)",
    )
    which: Literal["unknown", "all"] = _field(
        "unknown",
        "unknown: the visits none of whose events named anyone (every visit without a FaceNet "
        "model); all: every visit",
    )
    per_visit: int = _field(
        5, "most images kept per visit: the best ones (large, frontal, sharp, whole)", ge=1, le=50
    )
    min_gap_s: float = _field(
        1.0, "at most one image (the best) per this many seconds of a visit", ge=0, le=3600
    )
    max_mb: float = _field(
        1000, "the oldest visits are deleted when they take more disk than this", gt=0
    )
    keep_days: float = _field(
        7, "visits that started longer ago are deleted (faces are personal data)", gt=0, le=3650
    )

    @field_validator("dir")
    @classmethod
    def _a_folder(cls, folder: str | None) -> str | None:
        if folder is not None and not folder.strip():
            raise ValueError("expected a folder (null turns the archive off)")
        return folder


class TlsConfig(Section):
    ca_file: str | None = _field(None, "CA certificate to trust (PEM); null = system CAs")
    cert_file: str | None = _field(None, "client certificate (PEM), for brokers that ask")
    key_file: str | None = _field(
        None, "client key (PEM, unencrypted: there is no passphrase setting)"
    )
    insecure: bool = _field(False, "skip the host name check (testing only)")


def _an_address(value: object) -> object:
    """A host name or address as sockets take it: an IPv6 address written in brackets, as in
    a URL ([::1]), is the address (::1); one YAML read as something else (unquoted, digits
    and ':' are a number in base 60, [fd00::10] a list) is refused with how to write it."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            "a number: YAML reads digits and ':' unquoted as one (in base 60): write an IPv6 "
            'address in quotes, "2001:0:0:0:0:0:0:1"'
        )
    if isinstance(value, list):
        raise ValueError(
            'a list: YAML reads [...] unquoted as one: write an IPv6 address in quotes, "::1"'
        )
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        return value[1:-1]
    return value


def _topic_root(topic: str) -> str:
    """A topic that others go under (a trailing / dropped): no wildcard, no empty level, and
    not one of the broker's own ($SYS...), where brokers drop what clients publish."""
    if any(c in topic for c in "+#\0"):
        raise ValueError("MQTT topics cannot hold the wildcards + and # (or NUL)")
    topic = topic.rstrip("/")
    if not topic:
        raise ValueError("expected a topic such as facewatch or home/facewatch")
    if topic.startswith("$") and not topic.startswith("${"):  # (an unresolved reference)
        raise ValueError(
            "topics that start with $ are the broker's own: it drops what is sent there"
        )
    if "//" in topic:
        raise ValueError("an empty topic level (//)")
    return topic


class HomeAssistantConfig(Section):
    enabled: bool = _field(
        False,
        "announce the daemon to Home Assistant (MQTT discovery): per camera, connected, face "
        "in view, number of faces, people in view, last face; per enrolled person, in view",
    )
    discovery_prefix: str = _field(
        "homeassistant", "Home Assistant's discovery prefix (its MQTT settings)", min_length=1
    )
    people: bool = _field(
        True, "an occupancy sensor per enrolled person (off: none, e.g. for a large gallery)"
    )

    _topic = field_validator("discovery_prefix")(_topic_root)


class MqttConfig(Section):
    enabled: bool = _field(True, "publish to an MQTT broker")
    host: str = _field(
        "127.0.0.1", 'broker host name or address (IPv6 in quotes: "fd00::10", "::1")'
    )
    port: int = _field(1883, "broker port (8883 for TLS, usually)", ge=1, le=65535)
    username: str | None = _field(None, "user name")
    password: str | None = _field(None, "password: use ${credential:mqtt_password} or ${ENV}")
    tls: TlsConfig | None = _field(None, "TLS settings; null = plain TCP")
    topic_prefix: str = _field("facewatch", "every topic starts with PREFIX/NODE_ID/", min_length=1)
    keepalive_s: int = _field(30, "MQTT keepalive", ge=5, le=3600)
    protocol: Literal["5", "3.1.1"] = _field(
        "3.1.1",
        "MQTT version: 5 tells the daemon of a message the broker's ACL refuses (it logs it "
        "and keeps the events spooled; a mosquitto 2.0 message_size_limit below a snapshot's "
        "size makes it drop the connection again and again); 3.1.1 (a broker acknowledges a "
        "refused message as sent, and drops it: nothing is said)",
    )

    _topic = field_validator("topic_prefix")(_topic_root)
    _host = field_validator("host", mode="before")(_an_address)

    @field_validator("protocol", mode="before")
    @classmethod
    def _a_version(cls, value: object) -> object:
        return str(value) if isinstance(value, (int, float)) else value  # (YAML's 5 or 3.1)

    spool_dir: str = _field(
        "spool", "events wait here while the broker is away; relative to the config"
    )
    spool_max_events: int = _field(
        100_000,
        "spool bound, in messages (an event and its face snapshot are two); when full the "
        "oldest is dropped",
        ge=10,
    )
    home_assistant: HomeAssistantConfig = _field(
        HomeAssistantConfig(), "Home Assistant MQTT discovery"
    )

    @field_validator("home_assistant")
    @classmethod
    def _needs_mqtt(cls, value: HomeAssistantConfig, info: ValidationInfo) -> HomeAssistantConfig:
        if value.enabled and not info.data.get("enabled", True):
            raise ValueError("enabled: true needs MQTT: set mqtt.enabled: true as well")
        return value


class MetricsConfig(Section):
    enabled: bool = _field(True, "serve Prometheus metrics")
    address: str = _field(
        "127.0.0.1",
        'listen address (0.0.0.0 exposes it to the network; IPv6 in quotes: "::" every '
        'interface, IPv4 too where the system allows, "::1" loopback)',
    )
    _address = field_validator("address", mode="before")(_an_address)
    port: int = _field(9708, "listen port", ge=1, le=65535)
    identities: bool = _field(
        True,
        "name enrolled people in facewatch_recognitions_total (who was seen, when: personal "
        "data, kept by Prometheus); false: 'known' and 'unknown' only",
    )


class EventsConfig(Section):
    stdout: bool = _field(False, "also print each event as a JSON line on stdout")
    jsonl_file: str | None = _field(None, "also append each event to this JSON-lines file")


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _field("INFO", "log verbosity")


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
