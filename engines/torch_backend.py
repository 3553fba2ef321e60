"""The PyTorch backend: runs a ``torch.export`` program (``.pt2``) saved next to the ONNX model.

For GPU boxes without TensorRT. torch is imported here only, so ``engines`` stays torch-free
unless this backend is chosen. ``training/export_torch.py`` writes the ``.pt2`` with a
``facewatch.json`` extra file naming its tensors (the same names as the ONNX model).

- ``device``: "cuda" when available, else "cpu" (tests run it on the CPU).
- ``fp16``: autocast to float16 on CUDA (convolutions and matmuls in fp16, softmax and
  normalisation kept in fp32 by autocast); outputs come back as float32.
- ``cuda_graphs``: each input shape is captured once as a CUDA graph and replayed; the batch
  is padded up to a power of two so a few graphs serve every batch size.
- On CUDA, weights and inputs are channels-last (cuDNN's fast layout for convolutions).

Through ``load_engine(path, "torch")`` the settings come from the environment:
``FACEWATCH_TORCH_DEVICE`` (e.g. "cuda:1"), ``FACEWATCH_TORCH_FP16=1``,
``FACEWATCH_TORCH_CUDA_GRAPHS=1``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineError, SpecsFromLoad, TensorSpec, file_sha256

logger = logging.getLogger(__name__)

SPEC_FILE = "facewatch.json"
MAX_GRAPHS = 256  # captured shapes kept per engine
_GRAPH_LOCK = threading.RLock()


def program_path(model_path: str | Path) -> Path:
    """``x.onnx`` -> ``x.pt2`` (a ``.pt2`` path is returned as is)."""
    path = Path(model_path)
    return path if path.suffix == ".pt2" else path.with_suffix(".pt2")


def import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        from engines.base import install_hint

        raise EngineError(f"the torch backend needs PyTorch: {install_hint('train')}") from exc
    return torch


def _specs(raw: list[dict[str, Any]]) -> list[TensorSpec]:
    return [TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in raw]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def from_environment(model_path: str | Path, threads: int = 0) -> TorchEngine:
    """A TorchEngine with the FACEWATCH_TORCH_* settings of the environment."""
    return TorchEngine(
        model_path,
        device=os.environ.get("FACEWATCH_TORCH_DEVICE") or None,
        fp16=_env_flag("FACEWATCH_TORCH_FP16"),
        cuda_graphs=_env_flag("FACEWATCH_TORCH_CUDA_GRAPHS"),
        threads=threads,
    )


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class TorchEngine(SpecsFromLoad):
    """One exported program on one device; implements the Engine protocol."""

    def __init__(
        self,
        model_path: str | Path,
        device: str | None = None,
        fp16: bool = False,
        cuda_graphs: bool = False,
        threads: int = 0,
    ) -> None:
        torch = self._torch = import_torch()
        self.path = program_path(model_path)
        if not self.path.is_file():
            raise EngineError(
                f"{self.path}: exported program not found; write it with "
                f"`facewatch train torch-program {self.path.with_suffix('.onnx')}` (from the "
                "weights inside the ONNX model)"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(
                f"{self.path}: device {self.device} asked for, but CUDA is not available"
            )
        if fp16 and self.device.type != "cuda":
            raise EngineError(f"{self.path}: fp16 needs a CUDA device, not {self.device}")
        if threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.fp16 = fp16
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._module, spec = self._load()
        self._inputs = _specs(spec["inputs"])
        self._outputs = _specs(spec["outputs"])
        self._graphs: dict[tuple[tuple[int, ...], ...], tuple[Any, list[Any], list[Any]]] = {}
        self._staging: dict[int, Any] = {}
        self._stream: Any = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        # Graph-mode engines share one lock: no other thread launches work while one captures.
        self._gpu_lock = _GRAPH_LOCK if self.cuda_graphs else contextlib.nullcontext()
        logger.info(
            "loaded %s on %s (fp16=%s, graphs=%s)", self.path, self.device, fp16, self.cuda_graphs
        )

    def _load(self) -> tuple[Any, dict[str, Any]]:
        torch = self._torch
        extra = {SPEC_FILE: ""}
        try:
            program = torch.export.load(str(self.path), extra_files=extra)
        except Exception as exc:  # torch raises many types for a bad or foreign archive
            raise EngineError(f"{self.path}: cannot load the exported program: {exc}") from None
        try:
            spec = json.loads(extra[SPEC_FILE])
        except ValueError:
            raise EngineError(f"{self.path}: no {SPEC_FILE} inside; re-export it") from None
        self._check_source(spec)
        module = program.module().to(self.device)
        if self.device.type == "cuda":
            module = module.to(memory_format=self._torch.channels_last)
        return module, spec

    def _check_source(self, spec: dict[str, Any]) -> None:
        """A program must come from the ONNX model beside it: after a re-export of the ONNX
        alone, the old program would run the old weights under the new model's id."""
        onnx_path = self.path.with_suffix(".onnx")
        recorded = spec.get("onnx_sha256")
        if recorded and onnx_path.is_file() and file_sha256(onnx_path) != recorded:
            raise EngineError(
                f"{self.path}: exported from another version of {onnx_path.name} (the ONNX "
                "changed since); export the program again (`facewatch train export "
                "--torch-program`, or `facewatch train torch-program MODEL.onnx`)"
            )

    def _run(self, tensors: list[Any]) -> list[Any]:
        torch = self._torch
        if self.device.type == "cuda":
            tensors = [
                t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                for t in tensors
            ]
        # No autocast weight cache: a CUDA graph must not point at casts freed on exit.
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16, cache_enabled=False):
            result = self._module(*tensors)
        return list(result) if isinstance(result, (tuple, list)) else [result]

    def _compute(self, tensors: list[Any]) -> list[Any]:
        """Inside inference mode (and, on CUDA, this engine's stream): float32 outputs."""
        if self.cuda_graphs:
            return self._replay(tensors)
        return [t.float() for t in self._run(tensors)]

    def infer_tensors(self, tensors: list[Any]) -> list[Any]:
        """Device tensors in, device tensors out (float32), ordered on the caller's stream."""
        torch = self._torch
        if self.device.type != "cuda":
            with torch.inference_mode():
                return self._compute(tensors)
        caller = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(caller)
        with self._gpu_lock, torch.inference_mode(), torch.cuda.stream(self._stream):
            outs = self._compute(tensors)
        caller.wait_stream(self._stream)
        for out in outs:
            out.record_stream(caller)
        return outs

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        missing = [s.name for s in self._inputs if s.name not in feeds]
        if missing:
            raise EngineError(f"{self.path}: missing inputs {missing}")
        arrays = [np.ascontiguousarray(feeds[s.name], dtype=np.float32) for s in self._inputs]
        if self.device.type != "cuda":
            with torch.inference_mode():
                outs = self._compute([torch.from_numpy(a) for a in arrays])
        else:
            with self._gpu_lock, torch.inference_mode(), torch.cuda.stream(self._stream):
                outs = self._compute([self._upload(i, a) for i, a in enumerate(arrays)])
                outs = [out.cpu() for out in outs]  # waits for this stream only
        return {s.name: out.numpy() for s, out in zip(self._outputs, outs, strict=True)}

    def _upload(self, index: int, array: np.ndarray) -> Any:
        """Host array -> device through a pinned staging buffer (grown when too small).
        The previous call ended with a synchronous copy back, so the buffer is free."""
        torch = self._torch
        staging = self._staging.get(index)
        if staging is None or staging.numel() < array.size:
            staging = torch.empty(array.size, dtype=torch.float32, pin_memory=True)
            self._staging[index] = staging
        view = staging[: array.size].view(array.shape)
        view.copy_(torch.from_numpy(array))
        return view.to(self.device, non_blocking=True)

    def _replay(self, tensors: list[Any]) -> list[Any]:
        """Run through a captured CUDA graph for this (batch-bucketed) input shape."""
        batch = int(tensors[0].shape[0])
        padded = _bucket(batch)
        key = tuple((padded, *t.shape[1:]) for t in tensors)
        if key not in self._graphs:
            if len(self._graphs) >= MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = self._capture(key)
        graph, static_in, static_out = self._graphs[key]
        for slot, t in zip(static_in, tensors, strict=True):
            slot[:batch].copy_(t)
            if padded > batch:
                slot[batch:].zero_()
        graph.replay()
        return [o[:batch].float().clone() for o in static_out]

    def _capture(self, key: tuple[tuple[int, ...], ...]) -> tuple[Any, list[Any], list[Any]]:
        """Capture on this engine's stream (the caller holds the GPU lock, so no other
        graph-mode engine launches work while the capture is open)."""
        torch = self._torch
        static_in = [torch.zeros(shape, device=self.device) for shape in key]
        for _ in range(2):  # warm-up outside the graph (cuDNN picks its kernels)
            self._run(static_in)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
            static_out = self._run(static_in)
        logger.debug("%s: captured a CUDA graph for %s", self.path.name, key)
        return graph, static_in, static_out

    def close(self) -> None:
        self._graphs.clear()
        self._module = None
