"""What the device pipeline (engines/torch_mtcnn.py) asks of its device for one batch: the
torch operations it dispatches outside the three networks, the network calls, and the times
the host waits for the device (a copy back, ``.item()``, ``.tolist()``, ``torch.equal``).

On a GPU each operation is a kernel launch (or at least a trip through the dispatcher) and
each wait drains the queue, so these counts bound how far launch overhead lets the pipeline
go, whatever the device's speed. They do not depend on the device: this runs on the CPU,
with P-Net's calls sized as on a GPU (``GPU_PNET_PIXELS``), so that a change to the pipeline
can be weighed without one. Times are not measured here (bench/bench_gpu.py does that).

    .venv/bin/python bench/device_ops.py [--frames 16] [--clip crowd_1080p] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import mtcnn_clips  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import engines.torch_mtcnn as tm  # noqa: E402
from engines.detectors import load_detector  # noqa: E402

WAITS = ("cpu", "item", "tolist")  # Tensor methods that wait for the device


class Tally(TorchDispatchMode):
    """Counts the operations dispatched while ``counting`` is set, by the line of engines/
    code that asked for each, and the host's waits."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch's TorchDispatchMode, untyped
        self.counting = False
        self.ops: collections.Counter[str] = collections.Counter()
        self.sites: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.waits: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.counting:
            self.ops[func.overloadpacket.__name__] += 1
            self.sites[_site()] += 1
        return func(*args, **(kwargs or {}))


def _site() -> str:
    for frame in reversed(traceback.extract_stack(limit=30)):
        if "/engines/" in frame.filename:
            return f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
    return "elsewhere"


def instrument(tally: Tally) -> None:
    """Count network calls (their own operations not counted) and the host's waits."""
    run = tm.DeviceMTCNN._run

    def counted_run(engine: Any, blob: Any) -> Any:
        tally.calls[Path(getattr(engine, "path", "network")).stem] += 1
        was, tally.counting = tally.counting, False
        try:
            return run(engine, blob)
        finally:
            tally.counting = was

    tm.DeviceMTCNN._run = staticmethod(counted_run)  # type: ignore[method-assign]
    for name in WAITS:
        setattr(torch.Tensor, name, _waiting(tally, getattr(torch.Tensor, name)))
    torch.equal = _waiting(tally, torch.equal)


def _waiting(tally: Tally, method: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if tally.counting:
            tally.waits[_site()] += 1
        return method(*args, **kwargs)

    return wrapper


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16, help="frames in the batch (default 16)")
    p.add_argument("--clip", default="crowd_1080p", help="a clip of bench_mtcnn's")
    p.add_argument("--data", type=Path, default=mtcnn_clips.DEFAULT_DATA)
    p.add_argument("--top", type=int, default=25, help="lines of code listed (default 25)")
    args = p.parse_args()
    frames = mtcnn_clips.decode_clip(args.data, args.clip, args.frames)
    if len(frames) < args.frames:
        raise SystemExit(f"{args.clip}: {len(frames)} frames decoded, {args.frames} asked for")
    from bench_gpu import export_mtcnn_programs

    tm.PNET_MAX_PIXELS = tm.GPU_PNET_PIXELS  # P-Net's calls as on a GPU
    with tempfile.TemporaryDirectory() as tmp:
        models = export_mtcnn_programs(Path(tmp), args.data)
        detector = load_detector(models, backend="torch", threads=2, lanes=1)
        detector.detect(frames)  # warm-up
        tally = Tally()
        instrument(tally)
        with tally:
            tally.counting = True
            found = detector.detect(frames)
            tally.counting = False
    h, w = frames[0].shape[:2]
    print(f"one batch of {len(frames)} frames of {w}x{h} ({args.clip}), torch {torch.__version__}")
    print(f"faces found: {sum(len(f) for f in found)}")
    print(f"network calls: {dict(sorted(tally.calls.items()))}")
    print(f"operations outside the networks: {sum(tally.ops.values())}")
    print(f"host waits for the device: {sum(tally.waits.values())}")
    print("most frequent operations: " + ", ".join(f"{k} {n}" for k, n in tally.ops.most_common(8)))
    print("operations by line of engines/ code:")
    for site, n in tally.sites.most_common(args.top):
        print(f"  {n:6d}  {site}")
    print("waits by line of engines/ code:")
    for site, n in tally.waits.most_common(args.top):
        print(f"  {n:6d}  {site}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
