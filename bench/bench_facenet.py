"""FaceNet benchmark: facewatch's embeddings on ONNX Runtime against facenet-pytorch's
InceptionResnetV1 in eager PyTorch, and gallery matching against a large gallery.

Each side runs in its own subprocess with the same thread count (so neither's thread pool
spins while the other works): facewatch's ``FaceNet`` on ONNX Runtime at batch 1 and 16,
and on OpenVINO in bf16 (``recognition.precision: bf16``, on CPUs with native bf16),
facenet-pytorch at batch 1 and 16 (facenet-pytorch fp32 at 160x160; facewatch at the
model's input size and storage, fp32 or int8 (`train export --int8`); crops of real faces
when the shared data is there, else random pixels), then ``Gallery.match`` of 1 face against a gallery of
``--gallery-size`` random unit embeddings (a real SQLite gallery file). Benchmarks measure;
they do not assert timings. With ``--rounds N`` the embedding workers run N times, the two
sides in turn, and the median faces/s counts (the range in brackets).

Run it on an idle machine: each worker's CPU seconds and the load are recorded, and a WARNING
line says when other processes ran beside it (the reference's OpenMP threads spin while they
wait, so under load it slows down far more than facewatch: the speed-ups come out too high).

    .venv/bin/python bench/bench_facenet.py [--model models/facenet/facenet.onnx] [--threads 2]
        [--seconds 5] [--rounds 1] [--gallery-size 100000] [--match-dim 128] [--json OUT]

``--model random`` (or no ``--model`` and no models/facenet/facenet.onnx) exports a randomly
initialised Inception-ResNet-v1 at 160 px to a temporary folder, the network facenet-pytorch
runs: speed does not depend on the weights. Any other model (the shipped one is dlib's ResNet
at 150 px) is another network: its ratio to facenet-pytorch is printed, labelled as not a
speed-up.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from measure import machine_summary, run_measured  # bench/, the script's folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_MODEL = REPO / "models" / "facenet" / "facenet.onnx"
DATA = REPO.parent / "shared" / "data"
BATCHES = (1, 16)


def read_bgr(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"{path}: cannot read the image")
    return image


def crops_bgr(count: int = 16) -> np.ndarray:
    """160x160 uint8 BGR crops: centres of LFW photos when present, else random pixels."""

    photos = sorted((DATA / "lfw" / "images").glob("*/*_0001.jpg"))[:count]
    if len(photos) == count:
        return np.stack([read_bgr(p)[45:205, 45:205] for p in photos])
    return np.random.default_rng(0).integers(0, 256, (count, 160, 160, 3), dtype=np.uint8)


def timed(run: Callable[[], object], seconds: float, warmup: int = 2) -> dict[str, float]:
    """Call ``run`` until ``seconds`` have passed (at least 3 times); per-call statistics."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "calls": len(times)}


def worker_ort(args: argparse.Namespace, precision: str = "fp32") -> dict[str, Any]:
    import cv2

    from engines.facenet import FaceNet
    from engines.openvino_backend import cpu_has_bf16

    if precision == "bf16" and not cpu_has_bf16():
        return {"skipped": "this CPU has no native bf16 (AVX512_BF16 or AMX)"}
    net = FaceNet.load(args.model, threads=args.threads, precision=precision)
    height, width = net.image_size_hw
    crops = np.stack(
        [cv2.resize(c, (width, height), interpolation=cv2.INTER_AREA) for c in crops_bgr()]
    )
    storage = "int8" if net.meta.extra.get("int8") else precision
    out: dict[str, Any] = {
        "input": f"{height} px, {storage}",
        "model": net.meta.name,
        # the reference's network at its input size: Inception-ResNet-v1 at 160 px
        "same_network": (height, width) == (160, 160)
        and net.meta.extra.get("architecture") != "dlib-resnet",
    }
    for batch in BATCHES:
        stats = timed(functools.partial(net.embed, crops[:batch]), args.seconds)
        out[f"batch{batch}"] = {**stats, "faces_per_s": batch / stats["median_s"]}
    return out


def worker_torch(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tests.facenet_model import facenet_pytorch_class

    torch.set_num_threads(args.threads)
    cls = facenet_pytorch_class()
    if cls is None:
        return {"error": "facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)"}
    net = cls(pretrained=None).eval()
    x = (crops_bgr()[..., ::-1].astype(np.float32) - 127.5) / 128.0
    tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    out = {}
    with torch.inference_mode():
        for batch in BATCHES:
            stats = timed(functools.partial(net, tensor[:batch]), args.seconds)
            out[f"batch{batch}"] = {**stats, "faces_per_s": batch / stats["median_s"]}
    return out


def worker_match(args: argparse.Namespace) -> dict[str, Any]:
    from daemon.gallery import Gallery
    from daemon.gallery_write import Enrollment
    from engines.base import ModelMetadata

    size = args.match_dim or int(ModelMetadata.load(args.model).embedding_size or 512)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.gallery_size, size)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as folder:
        gallery = Gallery.create(Path(folder) / "g.sqlite", "bench", size)
        faces = [Enrollment(f"p{k // 5}", v, f"{k:064x}") for k, v in enumerate(vectors)]
        started = time.perf_counter()
        gallery.enroll(faces)
        enroll_s = time.perf_counter() - started
        started = time.perf_counter()
        gallery.match(vectors[:1])  # loads the matrix
        load_s = time.perf_counter() - started
        query = vectors[7:8] + 0.01
        stats = timed(lambda: gallery.match(query), args.seconds)
        gallery.close()
    return {"embedding_size": size, "enroll_s": enroll_s, "first_match_s": load_s, **stats}


def worker_bf16(args: argparse.Namespace) -> dict[str, Any]:
    return worker_ort(args, "bf16")


WORKERS = {"ort": worker_ort, "bf16": worker_bf16, "torch": worker_torch, "match": worker_match}
KINDS = ("ort", "bf16", "torch", "match")


def random_model(folder: Path) -> Path:
    """A randomly initialised Inception-ResNet-v1 as ONNX + sidecar (speed only)."""
    from tests.facenet_model import build_test_model

    return build_test_model(folder)


def run_worker(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One worker's result, with what the machine did meanwhile (``machine``)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
    argv += ["--model", str(Path(args.model).resolve())]
    argv += ["--threads", str(args.threads), "--seconds", str(args.seconds)]
    argv += ["--gallery-size", str(args.gallery_size)]
    if args.match_dim:
        argv += ["--match-dim", str(args.match_dim)]
    print(f"[bench] {kind} ...", file=sys.stderr, flush=True)
    done, machine = run_measured(argv)
    if done.returncode != 0:
        error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        return {"error": error, "machine": machine}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "machine": machine}


def merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One worker's rounds: the median faces/s of each batch size, with every round's; the
    first error if any round failed; ``machine``: every round's."""
    machines = [r["machine"] for r in runs]
    failed = [r for r in runs if "batch1" not in r]
    if failed or len(runs) == 1:
        return {**(failed or runs)[0], "machine": machines}
    merged: dict[str, Any] = {**runs[0], "machine": machines}
    for batch in BATCHES:
        rates = [r[f"batch{batch}"]["faces_per_s"] for r in runs]
        merged[f"batch{batch}"] = {
            "median_s": statistics.median(r[f"batch{batch}"]["median_s"] for r in runs),
            "calls": sum(r[f"batch{batch}"]["calls"] for r in runs),
            "faces_per_s": statistics.median(rates),
            "faces_per_s_rounds": rates,
        }
    return merged


def rate_text(result: dict[str, Any], batch: int) -> str:
    """Faces/s; over several rounds the median, with the range."""
    stats = result[f"batch{batch}"]
    text = f"{stats['faces_per_s']:.1f}"
    rounds = stats.get("faces_per_s_rounds") or []
    if len(rounds) > 1:
        text += f" ({min(rounds):.1f}-{max(rounds):.1f})"
    return text + " f/s"


def cpu_text(result: dict[str, Any]) -> str:
    """The worker's CPU seconds over its wall seconds, over all rounds."""
    machines = result["machine"] if isinstance(result["machine"], list) else [result["machine"]]
    cpu = sum(m["worker_cpu_s"] for m in machines)
    wall = sum(m["worker_wall_s"] for m in machines)
    return f"{cpu:.0f} / {wall:.0f} s"


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    model = "a random Inception-ResNet-v1" if args.random_model else args.model
    rows = [f"FaceNet benchmark, {args.threads} thread(s), model {model}", ""]
    rows.append(
        f"{'implementation':<48} {'batch 1':>26} {'batch 16':>26} {'worker CPU / wall':>18}"
    )
    for kind, label in (
        ("ort", "facewatch FaceNet, ONNX Runtime"),
        ("bf16", "facewatch FaceNet, OpenVINO"),
        ("torch", "facenet-pytorch, eager (160 px, fp32)"),
    ):
        r = results[kind]
        if "input" in r:
            label += f" ({r['input']})"
        if "batch1" not in r:
            reason = "error: " + r["error"] if "error" in r else "skipped: " + r["skipped"]
            rows.append(f"{label:<48} {reason}")
            continue
        cells = [rate_text(r, b) for b in BATCHES]
        rows.append(f"{label:<48} {cells[0]:>26} {cells[1]:>26} {cpu_text(r):>18}")
    for kind, label in (("ort", "speed-up, ONNX Runtime"), ("bf16", "speed-up, OpenVINO bf16")):
        if "batch1" in results[kind] and "batch1" in results["torch"]:
            if not results[kind].get("same_network", True):
                label = label.replace("speed-up", "ratio (another network, not a speed-up)")
            ratio = [results[kind][f"batch{b}"]["faces_per_s"] / results["torch"][f"batch{b}"]["faces_per_s"] for b in BATCHES]  # fmt: skip
            rows.append(f"{label:<48} {ratio[0]:>25.2f}x {ratio[1]:>25.2f}x")
    m = results["match"]
    rows.append("")
    if "error" in m:
        rows.append(f"gallery match: error: {m['error']}")
    else:
        rows.append(
            f"gallery match, 1 face vs {args.gallery_size:,} x {m['embedding_size']}-d: "
            f"{m['median_s'] * 1e3:.2f} ms median ({m['calls']} calls; first call with "
            f"loading {m['first_match_s']:.2f} s; enrolling them {m['enroll_s']:.1f} s)"
        )
    return "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        default=None,
        help="facewatch's FaceNet (.onnx with its .json sidecar), or 'random': a random "
        "Inception-ResNet-v1 at 160 px, the reference's network (default: "
        "models/facenet/facenet.onnx, else random)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the embedding workers this many times, the two sides in turn; the median "
        "faces/s counts",
    )
    p.add_argument("--gallery-size", type=int, default=100_000)
    p.add_argument(
        "--match-dim",
        type=int,
        default=None,
        help="embedding size of the gallery matched against (default: the model's; "
        "facewatch's recipes train 128)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    return p


def measure_all(
    args: argparse.Namespace, folder: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every worker, the embedding ones --rounds times in turn, then the matching one; the
    model is --model, the shipped one, or a random Inception-ResNet-v1 made in ``folder``.
    Returns each kind's merged result and each worker's machine figures in the order run."""
    if args.model is None and DEFAULT_MODEL.is_file():
        args.model = DEFAULT_MODEL
    args.random_model = args.model in (None, "random")
    if args.random_model:
        args.model = random_model(folder)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    machines = []  # each worker's, in the order they ran
    for kind in [k for _ in range(args.rounds) for k in KINDS if k != "match"] + ["match"]:
        runs[kind].append(run_worker(kind, args))
        machines.append({"worker": kind, **runs[kind][-1]["machine"]})
    return {kind: merge_rounds(runs[kind]) for kind in KINDS}, machines


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        results, machines = measure_all(args, Path(folder))
        print(table(results, args))
        for line in machine_summary(machines):
            print(line)
    failed = [kind for kind in KINDS if "error" in results[kind]]
    if failed:
        print(f"FAILED: {', '.join(failed)} (see the error above)")
    if args.json:
        out = {"failed": bool(failed), "threads": args.threads, "rounds": args.rounds}
        out |= {**results, "machine": machines}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
