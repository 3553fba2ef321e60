"""bench_gpu.py's FaceNet half: InceptionResnetV1 faces/s, facenet-pytorch (fp32, fp16
autocast) against facewatch's torch backend (fp32 / fp16, with and without CUDA graphs, input
on the device and from host numpy) and TensorRT where it is installed."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from gpu_timing import tensorrt_available, time_calls


def reference_facenet(x: Any, amps: tuple[bool, ...], iters: int) -> list[dict[str, Any]]:
    """facenet-pytorch's InceptionResnetV1 (random weights: speed does not depend on them)."""
    import torch

    try:
        from facenet_pytorch import InceptionResnetV1
    except ImportError as exc:
        print(f"[bench] facenet-pytorch unavailable: {exc}", file=sys.stderr)
        return []
    ref = InceptionResnetV1(pretrained=None).eval().to(x.device)
    rows = []
    with torch.inference_mode():
        for amp in amps:

            def run(amp: bool = amp) -> Any:
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    return ref(x)

            label = f"facenet-pytorch {'fp16 autocast' if amp else 'fp32'}"
            rows.append({"impl": label, "s": time_calls(run, iters)})
    return rows


def bench_facenet(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import torch

    from engines.torch_backend import TorchEngine
    from training.export_torch import export_module, standin_facenet
    from training.facenet_nets import NormalisedEmbedding

    n, dev = args.faces_batch, torch.device(args.device)
    x = torch.randn(n, 3, 160, 160, device=dev)
    rows = reference_facenet(x, (False, True) if args.device == "cuda" else (False,), args.iters)
    pt2 = export_module(
        NormalisedEmbedding(standin_facenet(torch.randn(8, 3, 160, 160))),
        torch.zeros(2, 3, 160, 160),
        work / "facenet.pt2",
        "image",
        ["embedding"],
    )
    host = x.cpu().numpy()
    configs = (
        [(False, False), (False, True), (True, False), (True, True)]
        if args.device == "cuda"
        else [(False, False)]
    )
    for fp16, graphs in configs:
        engine = TorchEngine(pt2, device=args.device, fp16=fp16, cuda_graphs=graphs)
        label = f"facewatch torch {'fp16' if fp16 else 'fp32'}{' graphs' if graphs else ''}"
        rows.append(
            {
                "impl": f"{label}, on device",
                "s": time_calls(functools.partial(engine.infer_tensors, [x]), args.iters),
            }
        )
        rows.append(
            {
                "impl": f"{label}, from host",
                "s": time_calls(functools.partial(engine.infer, {"image": host}), args.iters),
            }
        )
    if args.device == "cuda" and tensorrt_available():
        rows += tensorrt_facenet(pt2, x, n, args.iters)
    for row in rows:
        row["faces_per_s"] = round(n / row.pop("s"))
        print(f"[bench] {row}", file=sys.stderr, flush=True)
    return rows


def tensorrt_facenet(pt2: Path, x: Any, n: int, iters: int) -> list[dict[str, Any]]:
    """The same stand-in network through ONNX and TensorRT (fp32, fp16), from host numpy."""
    import torch

    from engines.base import ModelMetadata
    from engines.build import BuildOptions
    from engines.tensorrt import TensorRTEngine
    from engines.trt_build import build_engine
    from training.export_facenet import export_onnx
    from training.export_torch import standin_facenet

    onnx_path = pt2.with_name("facenet_trt.onnx")
    export_onnx(standin_facenet(torch.randn(8, 3, 160, 160)), onnx_path, 160)
    ModelMetadata("facenet_trt", "facenet", (160, 160), outputs=["embedding"]).save(onnx_path)
    host, rows = x.cpu().numpy(), []
    for precision in ("fp32", "fp16"):
        plan = build_engine(onnx_path, BuildOptions(precision, (1, n, n)), pt2.parent / "plans")
        engine = TensorRTEngine(plan)
        rows.append(
            {
                "impl": f"facewatch tensorrt {precision}, from host",
                "s": time_calls(functools.partial(engine.infer, {"image": host}), iters),
            }
        )
    return rows
