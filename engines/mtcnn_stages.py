"""MTCNN's three models loaded one by one, each checked to be the stage it is named for.

A model file cut short does not load; one copied over another stage's (``rnet.onnx`` in
``pnet.onnx``'s place: the sidecar beside it still says P-Net) loads, and failed only in
the first detection: OpenVINO's multi-line refusal, or a numpy IndexError from deep in the
cascade. Its inputs and outputs tell it at the load, naming the file. ``MTCNN.load`` and
``facewatch validate-config`` load the models through ``load_stage``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engines.base import Engine, EngineError, ModelMetadata
from engines.loader import load_engine

if TYPE_CHECKING:
    from engines.build import PlanRequest

STAGES = ("pnet", "rnet", "onet")
TITLES = {"pnet": "P-Net", "rnet": "R-Net", "onet": "O-Net"}
# the image each stage takes (P-Net: a pyramid level of any size)
STAGE_HW: dict[str, tuple[int, int] | None] = {"pnet": None, "rnet": (24, 24), "onet": (48, 48)}
# each stage's outputs: P-Net's are maps (N, C, H, W), R-Net's and O-Net's a row per crop
STAGE_OUTPUTS = {
    "pnet": ("reg", "prob"),
    "rnet": ("reg", "prob"),
    "onet": ("reg", "landmarks", "prob"),
}


def stage_sidecar(path: Path, name: str) -> ModelMetadata:
    """The sidecar of MTCNN's ``name`` model at ``path``; EngineError when it is another's."""
    meta = ModelMetadata.load(path)
    if meta.kind != f"mtcnn-{name}":
        raise EngineError(f"{path}: sidecar says kind {meta.kind!r}, expected 'mtcnn-{name}'")
    return meta


def load_stage(
    path: Path,
    name: str,
    backend: str,
    threads: int = 0,
    trt_plans: PlanRequest | None = None,
) -> Engine:
    """The engine of MTCNN's ``name`` model at ``path`` on ``backend``; an EngineError that
    names the file when it does not load, or is not that stage's model."""
    engine = load_engine(path, backend=backend, threads=threads, trt_plans=trt_plans)
    try:
        check_stage(engine, name, path)
    except EngineError:
        engine.close()
        raise
    return engine


def check_stage(engine: Engine, name: str, path: Path) -> None:
    """EngineError when ``engine``'s input size or outputs are not MTCNN's ``name``'s (what
    a backend does not tell, its specs left open, passes)."""
    title, wanted = TITLES[name], STAGE_HW[name]
    shape = engine.inputs[0].shape if engine.inputs else ()
    hw = tuple(shape[2:4]) if len(shape) == 4 else (None, None)
    if None not in hw and hw != wanted:
        takes = "any size" if wanted is None else f"{wanted[1]}x{wanted[0]}"
        raise EngineError(
            f"{path}: not MTCNN's {title} model: it takes {hw[1]}x{hw[0]} images, {title} "
            f"{takes} (another stage's file copied over it?)"
        )
    outputs = {spec.name: spec.shape for spec in engine.outputs}
    missing = [output for output in STAGE_OUTPUTS[name] if output not in outputs]
    if missing:
        raise EngineError(
            f"{path}: not MTCNN's {title} model: no output {', '.join(missing)} (it has "
            f"{', '.join(outputs) or 'none'})"
        )
    rank = 4 if name == "pnet" else 2
    odd = [output for output, shape in outputs.items() if len(shape) > 1 and len(shape) != rank]
    if odd:
        what = "maps (P-Net's)" if rank == 2 else "one row per crop (R-Net's or O-Net's)"
        raise EngineError(
            f"{path}: not MTCNN's {title} model: its outputs are {what} (another stage's "
            "file copied over it?)"
        )
