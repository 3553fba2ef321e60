"""`facewatch train export`: a training checkpoint -> ONNX embedding model + sidecar + card.

The graph takes ``image`` (N, 3, H, W) float32 (dynamic N) and returns ``embedding``
(N, D), L2-normalised inside the graph. Weights are the moving average when the run kept
one. After writing, ONNX Runtime is checked against PyTorch on the given face crops.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.base import EngineError, ModelMetadata
from training.checkpoint import Checkpoint, load_model_file
from training.embedders import OnnxEmbedder, TorchEmbedder
from training.export_precision import quantize_int8, weights_to_fp16
from training.export_quality import (
    replacement_refused,
    sidecar_lfw,
    warn_rough_lfw,
    warn_unmeasured,
)
from training.export_staging import backup_folder, restore_command, staged
from training.facenet_nets import ModelFileError, NormalisedEmbedding, build_model
from training.model_card import TRAINED_HERE, model_card
from training.onnx_weights import load_onnx_weights

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4  # the fp32 graph against PyTorch
FP16_TOLERANCE = 5e-3  # fp16-stored weights against the fp32 PyTorch model (unit vectors)
INT8_MIN_COSINE = 0.98  # int8 embeddings against the fp32 PyTorch model, on held-back crops
INT8_NO_PROGRAM = "an int8 model has no torch program: int8 is for CPUs, the torch backend for GPUs"
# torch warns about constant folding with TrainingMode.PRESERVE; the graph is in eval mode and
# the parity check compares it with PyTorch, so the warning only alarms (only it is silenced)
CONSTANT_FOLDING_WARNING = r"It is recommended that constant folding be turned off"


def metadata(ckpt: Checkpoint, name: str, lfw: dict[str, Any] | None, fp16: bool) -> ModelMetadata:
    opts, extra = ckpt.options, ckpt.extra
    prewhiten = opts.get("standardization", "fixed") == "prewhiten"
    info: dict[str, Any] = {
        "alignment": extra.get("alignment", "margin"),
        "margin": extra.get("margin", 32),
        "distance": "squared euclidean on L2-normalised embeddings",
        "epochs": ckpt.epoch if "source" not in extra else None,
        "loss": opts.get("loss", "triplet"),
        "fp16_weights": fp16,
    }
    if prewhiten:
        info["prewhiten"] = True
    if extra.get("landmarks") is not None:  # trained on crops warped onto this template
        info["landmarks"] = extra["landmarks"]
    if lfw:
        info["lfw"] = lfw
    size = int(opts["image_size"])
    return ModelMetadata(
        name=name,
        kind="facenet",
        input_size_hw=(size, size),
        mean=0.0 if prewhiten else 127.5,
        std=1.0 if prewhiten else 128.0,
        channel_order="RGB",
        opset=OPSET,
        embedding_size=int(opts["embedding_size"]),
        outputs=["embedding"],
        training_data=str(extra.get("training_data", opts.get("data_dir", ""))),
        source=str(extra.get("source", TRAINED_HERE)),
        license="",
        lfw_accuracy=None if not lfw else float(lfw["accuracy_mean"]),
        extra=info,
    )


def export_onnx(
    net: nn.Module, out_path: Path, image_size: int, fold_batchnorm: bool = False
) -> Path:
    """Write the normalised graph with a dynamic batch axis. BatchNorm stays a node of its
    own, its weights under their PyTorch names, so that a torch program can be made from
    the ONNX file alone (``torch_program_from_onnx``); ONNX Runtime, OpenVINO and TensorRT
    fold it into the convolutions when they load the model (same speed on ONNX Runtime, and
    outputs within 2e-6 of the folded export's, measured). ``fold_batchnorm`` folds it here
    (for int8 quantisation, which should see the folded weights)."""
    graph = NormalisedEmbedding(net).eval()
    dummy = torch.zeros(2, 3, image_size, image_size)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CONSTANT_FOLDING_WARNING, category=UserWarning)
        torch.onnx.export(
            graph,
            (dummy,),
            str(out_path),
            input_names=["image"],
            output_names=["embedding"],
            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            training=torch.onnx.TrainingMode.EVAL
            if fold_batchnorm
            else torch.onnx.TrainingMode.PRESERVE,
        )
    return out_path


def _to_int8(
    net: nn.Module, path: Path, crops: np.ndarray, opts: dict[str, Any], shown: Path
) -> float:
    """Quantise ``path`` in place, calibrated on the even crops; returns the lowest cosine
    to PyTorch's fp32 embeddings on the odd ones. Below INT8_MIN_COSINE, RuntimeError
    (naming ``shown``, the model's final place, where nothing is written)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / path.name
        shutil.copy(ModelMetadata.sidecar_path(path), ModelMetadata.sidecar_path(trial))
        quantize_int8(path, crops[0::2], trial)
        torch_emb, onnx_emb = _embeddings(net, trial, crops[1::2], opts)
        cosine = float(np.sum(torch_emb * onnx_emb, axis=1).min())
        if cosine < INT8_MIN_COSINE:
            raise RuntimeError(
                f"{shown}: int8 embeddings reach only cosine {cosine:.4f} of fp32 (needs "
                f"{INT8_MIN_COSINE}); nothing written"
            )
        shutil.move(str(trial), str(path))
    return cosine


def _embeddings(
    net: nn.Module, onnx_path: Path, crops: np.ndarray, opts: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's and ONNX Runtime's embeddings of the same uint8 RGB crops."""
    torch_emb = TorchEmbedder(
        net, int(opts["image_size"]), opts.get("standardization", "fixed")
    ).embed_rgb(crops)
    return torch_emb, OnnxEmbedder(onnx_path).embed_rgb(crops)


def parity(net: nn.Module, onnx_path: Path, crops: np.ndarray, opts: dict[str, Any]) -> float:
    """Max abs difference of the embeddings, ONNX Runtime vs PyTorch, on uint8 RGB crops."""
    torch_emb, onnx_emb = _embeddings(net, onnx_path, crops, opts)
    return float(np.abs(torch_emb - onnx_emb).max())


def _checked_parity(
    net: nn.Module,
    path: Path,
    crops: np.ndarray,
    opts: dict[str, Any],
    tolerance: float,
    shown: Path,
) -> float:
    diff = parity(net, path, crops, opts)
    if diff > tolerance:
        raise RuntimeError(
            f"{shown}: ONNX Runtime differs from PyTorch by {diff:.2e} (tolerance "
            f"{tolerance:.0e}); nothing written"
        )
    return diff


def export_network(
    net: nn.Module, onnx_path: str | Path, image_size: int = 160, torch_program: bool = True
) -> Path:
    """Write ``onnx_path`` (+ sidecar) for an embedding network without a checkpoint (a
    stand-in for speed and parity checks), and with ``torch_program`` the ``.pt2`` beside it."""
    onnx_path = Path(onnx_path)
    export_onnx(net, onnx_path, image_size)
    meta = ModelMetadata(
        name=onnx_path.stem,
        kind="facenet",
        input_size_hw=(image_size, image_size),
        embedding_size=int(net.last_linear.out_features),
        outputs=["embedding"],
        source="facewatch export_network (an Inception-ResNet-v1 without a checkpoint)",
    )
    meta.save(onnx_path)
    if torch_program:
        meta.extra["torch_program"] = _write_torch_program(
            net, onnx_path, None, image_size, PARITY_TOLERANCE
        )
        meta.save(onnx_path)
    return onnx_path


def network_from_onnx(onnx_path: str | Path) -> tuple[nn.Module, ModelMetadata]:
    """The PyTorch network (eval mode) of a FaceNet ONNX model that facewatch exported or
    imported, with the weights inside it, and its sidecar."""
    onnx_path = Path(onnx_path)
    meta = ModelMetadata.load(onnx_path)
    if meta.kind != "facenet" or meta.input_size_hw is None:
        raise ValueError(f"{onnx_path}: not a FaceNet model (its sidecar says {meta.kind!r})")
    if meta.extra.get("int8"):
        raise ValueError(f"{onnx_path}: {INT8_NO_PROGRAM} (export the fp32 or fp16 model)")
    if meta.extra.get("architecture") == "dlib-resnet":
        from training.dlib_net import skeleton

        net: nn.Module = skeleton()
    else:
        net = build_model("inception_resnet_v1", int(meta.embedding_size or 128), 1.0)
    load_onnx_weights(NormalisedEmbedding(net), onnx_path)
    return net.eval(), meta


def student_state(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside an Inception-ResNet-v1 ONNX model that facewatch exported (fp32
    or fp16; its BatchNorm is kept, so the network is the exported one, its weights rounded
    to the file's precision): how a run goes on from a model that came back without its
    checkpoint (``--pretrained-model MODEL.onnx``)."""
    try:
        net, meta = network_from_onnx(onnx_path)
    except (OSError, ValueError, EngineError) as exc:  # each names the file
        raise ModelFileError(str(exc)) from None
    if meta.extra.get("architecture") == "dlib-resnet":
        raise ModelFileError(
            f"{onnx_path}: dlib's ResNet, not Inception-ResNet-v1: it can teach a student "
            "(--teacher), not start one"
        )
    return net.state_dict()  # fp32: an fp16 file's weights were copied into fp32 tensors


def torch_program_from_onnx(onnx_path: str | Path) -> dict[str, Any]:
    """The ``.pt2`` beside a FaceNet ONNX model that facewatch exported (the shipped one, say),
    made from the weights inside it: no checkpoint needed. Checked against the ONNX model;
    returns what ``export_checkpoint`` records of it."""
    net, meta = network_from_onnx(onnx_path)
    assert meta.input_size_hw is not None
    return _write_torch_program(net, Path(onnx_path), None, meta.input_size_hw[0], PARITY_TOLERANCE)


def _write_torch_program(
    net: nn.Module,
    onnx_path: Path,
    crops: np.ndarray | None,
    size: int,
    tolerance: float,
    shown: Path | None = None,
) -> dict[str, Any]:
    """The ``.pt2`` beside ``onnx_path`` (its final form: it records the file's hash, and the
    torch backend refuses a program whose ONNX has changed since), checked against it on the
    CPU on ``crops`` (uint8 RGB; random pixels when None)."""
    from engines.torch_backend import program_path
    from training.export_torch import export_module, parity_with_onnx

    if crops is None:
        crops = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    graph = NormalisedEmbedding(net).eval()
    pt2 = export_module(
        graph,
        torch.zeros(2, 3, size, size),
        program_path(onnx_path),
        "image",
        ["embedding"],
        onnx_path=onnx_path,
    )
    diff = parity_with_onnx(pt2, onnx_path, OnnxEmbedder(onnx_path).preprocess(crops))
    if diff > tolerance:
        raise RuntimeError(
            f"{program_path(shown or onnx_path)}: the torch program differs from "
            f"{onnx_path.name} by {diff:.2e} (tolerance {tolerance:.0e})"
        )
    return {"file": pt2.name, "max_abs_diff": diff}


def record_lfw(onnx_path: str | Path, lfw: dict[str, Any]) -> ModelMetadata:
    """Write LFW figures into a model's sidecar and rewrite its card."""
    onnx_path = Path(onnx_path)
    meta = ModelMetadata.load(onnx_path)
    meta.extra["lfw"] = {k: v for k, v in lfw.items() if k not in ("tpr", "fpr", "model")}
    meta.lfw_accuracy = float(lfw["accuracy_mean"])
    meta.save(onnx_path)
    onnx_path.with_suffix(".md").write_text(model_card(meta, onnx_path))
    warn_rough_lfw(onnx_path, meta.extra["lfw"])
    return meta


def export_checkpoint(
    checkpoint: str | Path | Checkpoint,
    out_path: str | Path,
    parity_crops: np.ndarray | None = None,
    name: str = "facenet",
    lfw: dict[str, Any] | None = None,
    fp16: bool = False,
    command: str = "facewatch train export",
    training_data: str | None = None,
    license: str = "",
    int8: bool = False,
    torch_program: bool = False,
    even_if_worse: bool = False,
) -> tuple[Path, float]:
    """Export a checkpoint (a file ``load_model_file`` reads, or one already read), write
    sidecar and model card, check parity; returns (ONNX path, max abs diff).
    ``int8``: quantise, calibrated on half of ``parity_crops`` and checked on the other half.
    ``torch_program``: also write the ``.pt2`` beside it, for the torch engine backend.
    The files replace those at ``out_path`` only once every check has passed (see
    training/export_staging.py); a model there is kept under ``replaced/`` beside it, and
    one with better LFW figures is replaced only ``even_if_worse`` (ValueError)."""
    if int8 and (fp16 or parity_crops is None or len(parity_crops) < 2):
        raise ValueError("int8 export needs face crops to calibrate on (and excludes fp16)")
    if int8 and torch_program:
        raise ValueError(INT8_NO_PROGRAM)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_model_file(checkpoint)
    out_path = Path(out_path)
    meta = metadata(ckpt, name, lfw if lfw is not None else ckpt.extra.get("lfw"), fp16)
    if training_data:
        meta.training_data = training_data
    meta.license = license
    meta.extra["export_command"] = command
    refused = None if even_if_worse else replacement_refused(out_path, meta.extra.get("lfw"))
    if refused:
        raise ValueError(refused)
    backup = backup_folder(out_path) if out_path.is_file() else None
    replaced = sidecar_lfw(out_path) if backup else None
    with staged(out_path, backup) as work:
        _write_model(ckpt, meta, work, out_path, parity_crops, int8, torch_program)
    diff = float(meta.extra.get("parity_max_abs_diff", float("nan")))
    _log_written(out_path, meta, diff, backup, replaced)
    return out_path, diff


def _log_written(
    out_path: Path,
    meta: ModelMetadata,
    diff: float,
    backup: Path | None,
    replaced: dict[str, Any] | None,
) -> None:
    """What the log says of an export: where it went, where the model it replaced is kept,
    and whether its LFW figures can be trusted."""
    logger.info("wrote %s (parity %.2e)", out_path, diff)
    if backup is not None:
        logger.warning(
            "%s: the model it replaced is kept in %s; to put it back: %s",
            out_path,
            backup,
            restore_command(out_path, backup),
        )
    if meta.extra.get("lfw"):
        warn_rough_lfw(out_path, meta.extra["lfw"])
    else:
        warn_unmeasured(out_path, replaced)


def _write_model(
    ckpt: Checkpoint,
    meta: ModelMetadata,
    path: Path,
    shown: Path,
    crops: np.ndarray | None,
    int8: bool,
    torch_program: bool,
) -> None:
    """Write and check the model at ``path`` (its files' names say ``shown``, their final
    place); what the checks measured goes into ``meta``, saved as its sidecar."""
    net, opts, fp16 = ckpt.network(), ckpt.options, bool(meta.extra["fp16_weights"])
    export_onnx(net, path, int(opts["image_size"]), fold_batchnorm=int8)
    meta.save(path)
    if crops is not None:
        diff = _checked_parity(net, path, crops, opts, PARITY_TOLERANCE, shown)
        meta.extra["parity_max_abs_diff"] = diff
    if fp16:
        weights_to_fp16(path)
        if crops is not None:
            diff16 = _checked_parity(net, path, crops, opts, FP16_TOLERANCE, shown)
            meta.extra["fp16_max_abs_diff"] = diff16
    if int8:
        assert crops is not None
        meta.extra.update(int8=True, int8_min_cosine=_to_int8(net, path, crops, opts, shown))
    if torch_program:
        tolerance = FP16_TOLERANCE if fp16 else PARITY_TOLERANCE
        meta.extra["torch_program"] = _write_torch_program(
            net, path, crops, int(opts["image_size"]), tolerance, shown
        )
    meta.save(path)
    path.with_suffix(".md").write_text(model_card(meta, shown))
