"""An exported ONNX model's weights stored as fp16, or quantised to int8 (ONNX Runtime's
static quantisation, calibrated on face crops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.embedders import OnnxEmbedder


def weights_to_fp16(path: Path) -> None:
    """Store float initialisers as fp16, cast back to fp32 in the graph (half the file size,
    fp32 arithmetic)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(
            numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16"
        )
        init.CopyFrom(half)
        casts.append(
            helper.make_node(
                "Cast", [init.name], [init.name[: -len("_fp16")]], to=onnx.TensorProto.FLOAT
            )
        )
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def quantize_int8(path: Path, calibration: np.ndarray, out: Path) -> None:
    """Write ``out``, the int8 version of ``path``: ONNX Runtime static quantisation (QDQ,
    weights int8 per output channel, activations uint8) calibrated on ``calibration`` face
    crops (uint8 RGB). On CPUs with VNNI it runs 2-3.5x faster than fp32 (bench/README.md)."""
    import tempfile

    from engines.ort import import_onnxruntime

    import_onnxruntime()  # first: its telemetry off before onnxruntime.quantization starts it
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    embedder = OnnxEmbedder(path)
    batches = [embedder.preprocess(calibration[i : i + 8]) for i in range(0, len(calibration), 8)]

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{embedder.input_name: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(path), str(prepared))
        quantize_static(
            str(prepared),
            str(out),
            Crops(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
