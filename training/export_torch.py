"""Write ``torch.export`` programs (``.pt2``) next to ONNX models, for the torch engine backend.

Each program takes and returns the same named tensors as its ONNX model (recorded in a
``facewatch.json`` extra file inside the archive), has a dynamic batch axis (and dynamic
height / width for P-Net), and is checked against ONNX Runtime on the CPU after writing.

The command is ``facewatch train torch-program MODEL.onnx ...`` (``training.cli``): it makes
each program from the weights inside the ONNX model (``training.onnx_weights``), so the
shipped models need nothing else; ``export_mtcnn`` also takes facenet-pytorch's state dicts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from engines.base import file_sha256
from engines.torch_backend import SPEC_FILE, program_path
from training.mtcnn_nets import CeilMaxPool2x2, load_net

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
MTCNN_NETS = {
    "pnet": (None, ("reg", "prob")),
    "rnet": ((24, 24), ("reg", "prob")),
    "onet": ((48, 48), ("reg", "landmarks", "prob")),
}


def _tensor_specs(
    names: Sequence[str], tensors: Sequence[torch.Tensor], dynamic: dict[int, str]
) -> list[dict[str, object]]:
    return [
        {
            "name": name,
            "shape": [None if axis in dynamic else int(d) for axis, d in enumerate(t.shape)],
            "dtype": str(t.dtype).replace("torch.", ""),
        }
        for name, t in zip(names, tensors, strict=True)
    ]


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    out_path: str | Path,
    input_name: str = "image",
    output_names: Sequence[str] = ("output",),
    dynamic_hw: bool = False,
    onnx_path: str | Path | None = None,
) -> Path:
    """Export ``module`` (one NCHW input) with a dynamic batch axis (and H/W when asked).

    Size-oblivious tracing keeps the program valid for batch 1 and for inputs whose feature
    maps shrink to 1x1 (P-Net's smallest pyramid level), which the example does not show.
    """
    module = module.eval()
    axes = {0: Dim.DYNAMIC}
    if dynamic_hw:
        axes.update({2: Dim.DYNAMIC, 3: Dim.DYNAMIC})
    arg_name = next(iter(_forward_params(module)))
    patch = torch.fx.experimental._config.patch  # type: ignore[attr-defined]
    with patch(backed_size_oblivious=True), torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes={arg_name: axes})
        outs = module(example)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    out_axes = {0: "batch", **({2: "h", 3: "w"} if dynamic_hw else {})}
    spec = {
        "inputs": _tensor_specs([input_name], [example], {0: "batch", **out_axes}),
        "outputs": _tensor_specs(output_names, outs, out_axes),
        "onnx_sha256": file_sha256(onnx_path) if onnx_path else None,
        "torch": torch.__version__,
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(out_path), extra_files={SPEC_FILE: json.dumps(spec)})
    logger.info("wrote %s", out_path)
    return out_path


def _forward_params(module: nn.Module) -> list[str]:
    import inspect

    return list(inspect.signature(module.forward).parameters)


def parity_with_onnx(pt2_path: str | Path, onnx_path: str | Path, x: np.ndarray) -> float:
    """Max abs difference, exported program vs ONNX Runtime on the CPU, over all outputs."""
    from engines.ort import import_onnxruntime
    from engines.torch_backend import TorchEngine

    ort = import_onnxruntime()

    engine = TorchEngine(pt2_path, device="cpu")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))
    got = engine.infer({engine.inputs[0].name: x})
    return max(float(np.abs(expected[k] - got[k]).max()) for k in names)


def _check(pt2: Path, onnx_path: Path, x: np.ndarray) -> float:
    diff = parity_with_onnx(pt2, onnx_path, x)
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(
            f"{pt2}: differs from ONNX Runtime ({onnx_path}) by {diff:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e})"
        )
    return diff


def export_mtcnn(
    weights_dir: str | Path | None, models_dir: str | Path, seed: int = 0
) -> dict[str, float]:
    """Write pnet/rnet/onet.pt2 next to the ONNX files in ``models_dir``, with the weights of
    facenet-pytorch's state dicts in ``weights_dir`` or, when None, those of the ONNX files;
    returns the parity diffs against ONNX Runtime."""
    models_dir = Path(models_dir)
    diffs = {}
    for name in MTCNN_NETS:
        onnx_path = models_dir / f"{name}.onnx"
        weights = onnx_path if weights_dir is None else Path(weights_dir) / f"{name}.pt"
        diffs[name] = mtcnn_program(name, weights, onnx_path, seed)[1]
    return diffs


def mtcnn_program(
    name: str, weights: str | Path, onnx_path: str | Path, seed: int = 0
) -> tuple[Path, float]:
    """``name``'s (pnet, rnet, onet) program beside ``onnx_path``, with the weights of a
    facenet-pytorch state dict or of an ONNX file; (path, max abs diff vs ONNX Runtime)."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX model not found (export it first)")
    hw, outputs = MTCNN_NETS[name]
    net = load_net(name, weights)
    if hw is None:  # dynamic height and width: see CeilMaxPool2x2
        net.pool1 = CeilMaxPool2x2()
    example = torch.zeros(2, 3, *(hw or (64, 80)))
    pt2 = export_module(
        net, example, program_path(onnx_path), "image", outputs, hw is None, onnx_path
    )
    # P-Net: sizes of each parity on each axis (the example's are even), as a pyramid gives
    rng = np.random.default_rng(seed)
    checks = [hw] if hw else [(75, 100), (76, 101)]
    diff = max(
        _check(pt2, onnx_path, rng.uniform(-1, 1, (3, 3, *size)).astype(np.float32))
        for size in checks
    )
    logger.info("%s: max abs diff vs ONNX Runtime %.2e", pt2, diff)
    return pt2, diff


def fit_batchnorm_stats(module: nn.Module, batch: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics from one batch (a stand-in network with
    random weights then has realistic activation scales, e.g. for speed and parity checks)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics exactly
    module.train()
    with torch.no_grad():
        module(batch)
    return module.eval()


def standin_facenet(batch: torch.Tensor, seed: int = 0, embedding_size: int = 512) -> nn.Module:
    """Inception-ResNet-v1 with seeded random weights and BatchNorm statistics fitted to
    ``batch`` (real face crops): for speed and parity checks where no trained model is at hand."""
    from training.facenet_nets import InceptionResnetV1

    torch.manual_seed(seed)
    net = InceptionResnetV1(embedding_size=embedding_size, keep_probability=1.0)
    return fit_batchnorm_stats(net, batch)
