"""The weights inside an ONNX model that facewatch exported from PyTorch, by their PyTorch
parameter names: so the torch backend's program (``.pt2``) can be made from a shipped ONNX
model alone, without the checkpoint or state dict it came from.

What the exporter changes, undone here: parameters it renamed (``onnx::Op_N``) take the name
of the module of the node that uses them (``/prelu1/PRelu`` -> ``prelu1.weight``, reshaped
back to one slope per channel; ``/net/last_linear/MatMul`` -> ``net.last_linear.weight``,
transposed back); identical tensors stored once are given to each name that an ``Identity``
node makes of them; weights stored as fp16 (``export --fp16``) are cast back to fp32.
BatchNorm must not have been folded into the convolutions (facewatch exports keep it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def onnx_state(onnx_path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict that an ONNX export of a PyTorch module holds (see the module doc)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # in graph order: casts first, then the aliases of their outputs
        source = node.input[0] if node.input else ""
        if node.op_type == "Cast" and source.endswith("_fp16") and source in arrays:
            arrays[node.output[0]] = arrays.pop(source).astype(np.float32)
        elif node.op_type == "Identity" and source in arrays:
            arrays[node.output[0]] = arrays[source]
    state = {name: array for name, array in arrays.items() if not name.startswith("onnx::")}
    for node in graph.node:
        module = ".".join(node.name.strip("/").split("/")[:-1])
        for name in node.input:
            if not (name.startswith("onnx::") and name in arrays and module):
                continue
            if node.op_type == "PRelu":
                state[f"{module}.weight"] = arrays[name].reshape(-1)
            elif node.op_type == "MatMul":
                state[f"{module}.weight"] = arrays[name].T
    return {
        name: torch.from_numpy(np.array(a, dtype=a.dtype, copy=True)) for name, a in state.items()
    }


def load_onnx_weights(module: torch.nn.Module, onnx_path: str | Path) -> torch.nn.Module:
    """``module`` with the weights of ``onnx_path``; every parameter and buffer must be there
    (BatchNorm's step counters aside), else a ValueError naming what is missing."""
    state = onnx_state(onnx_path)
    wanted = set(module.state_dict())
    for key in [k for k in state if k not in wanted]:
        # a node inside a method the wrapper calls (not a submodule call) is named without the
        # wrapper's prefix: ``/last_linear/MatMul`` for ``net.last_linear``
        owners = [w for w in wanted if w.endswith(f".{key}") and w not in state]
        if len(owners) == 1:
            state[owners[0]] = state.pop(key)
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"{onnx_path}: {len(missing)} of the network's weights are not in it (e.g. "
            f"{missing[0]}): another network, or an export with BatchNorm folded into the "
            "convolutions (an int8 model, or one exported before facewatch kept BatchNorm)"
        )
    return module.eval()
