"""The configuration's sections of how frames are processed: ``recognition`` (FaceNet and
the gallery), ``batching``, ``engines`` (the backends, TensorRT's plans) and ``tracking``
(tracks, the identity vote, when events are sent)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from daemon.config_section import Section, _field
from daemon.face_quality import MAX_PROFILE_OFFSET
from engines.build import camera_size_hw
from engines.loader import THREAD_BOUNDS, default_models_dir

# Faces below this are not matched. Against a 72-person gallery, crowd faces under 30 px were
# named as somebody 29 % of the time (strangers all), and the demo clip's 25 px face of Alex
# Lacamoire matched another person in 11 frames of 14; Lin-Manuel Miranda's smallest face
# there, 36 px, still names him. Enroll's own minimum, 40 px, would have left him unnamed.
MIN_RECOGNISED_FACE_PX = 30.0


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
