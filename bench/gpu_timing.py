"""What the GPU benchmarks (bench_gpu, bench_streams) share to time and profile torch work:
waiting for the device, timing calls, torch.profiler's operator tables, and whether
TensorRT is there."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], iters: int) -> float:
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - start) / iters


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
        from cuda.bindings import runtime  # noqa: F401
    except ImportError:
        return False
    return True


def kernel_profile(run: Callable[[], Any]) -> str:
    """torch.profiler over one call of ``run``: the operators by device time on CUDA (what
    cProfile cannot see: kernels run asynchronously), by CPU time elsewhere."""
    import torch

    with torch.profiler.profile(activities=profiler_activities()) as kernels:
        run()
        sync()
    return kernel_table(kernels)


def profiler_activities() -> list[Any]:
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def kernel_table(kernels: Any, rows: int = 30) -> str:
    """A finished torch.profiler's operators, by device time where there was a GPU."""
    import torch

    averages = kernels.key_averages()
    for sort in ("device_time_total", "cuda_time_total", "cpu_time_total"):
        if sort.startswith("cpu") or torch.cuda.is_available():
            try:
                table = averages.table(sort_by=sort, row_limit=rows)
            except (AttributeError, KeyError, ValueError, RuntimeError):
                continue
            return f"== torch.profiler, by {sort} ==\n{table}\n"
    return "== torch.profiler: no table ==\n"
