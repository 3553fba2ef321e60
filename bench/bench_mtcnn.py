"""Side-by-side MTCNN benchmark: facewatch (OpenVINO, by default) against facenet-pytorch 2.6.0 (PyTorch).

Both run on the same decoded frames with the same thread count, each implementation + clip +
batch size in its own subprocess (so its peak RSS is its own, and torch is never imported on
facewatch's side). Per run: decode the first ``--frames`` frames up front (not timed), load the
detector, run ``--warmup`` frames untimed, then time the rest fed one frame per call, and in
another worker ``--batch`` frames per call (facenet-pytorch also takes a list of frames of one
size). With ``--rounds R`` all that runs R times, alternating, and the median counts.
Afterwards the detections are compared: every reference face should be matched by one of ours
at IoU >= 0.9 (reported, never asserted). Benchmarks measure; they do not assert timings.

Run it on an idle machine. Each worker's CPU seconds and the machine's load are recorded;
a WARNING line says when other processes ran beside the workers: the reference's OpenMP
threads spin while they wait, so under load it slows down far more than facewatch, and the
speed-ups come out several times too high.

    .venv-ref/bin/python bench/bench_mtcnn.py [--frames 40] [--threads 2] [--batch 8]
        [--repeat 2] [--rounds 3] [--json OUT]

The reference side needs torch + facenet-pytorch (``bench/setup_reference.sh`` makes .venv-ref);
facewatch's side runs in ``--python-ours`` (default: the same interpreter) with the work tree's
``engines`` first on sys.path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engines.boxes import greedy_match  # noqa: E402  (the work tree's engines)

DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_MODELS = REPO / "models" / "mtcnn"

# name -> (video relative to the data folder, resize_wh or None)
CLIPS: dict[str, tuple[str, tuple[int, int] | None]] = {
    "crowd_1080p": ("videos/crowd_1080p.mp4", None),
    "crowd_720p": ("videos/crowd_1080p.mp4", (1280, 720)),
    "hamilton_360p": ("videos/hamilton_360p.mp4", None),
}
MIN_FACE_SIZE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
SCALE_FACTOR = 0.709
AGREE_IOU = 0.9

# One frame's detections: boxes (K,4) xyxy, scores (K,), landmarks (K,5,2).
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
Detector = Callable[[list[np.ndarray]], list[Detections]]
VERSIONS: dict[str, str] = {"numpy": np.__version__, "opencv": cv2.__version__}


# ---------------------------------------------------------------- worker side (one subprocess)


def decode_clip(data: Path, clip: str, n_frames: int) -> list[np.ndarray]:
    """The first n_frames BGR frames of a clip, resized with INTER_AREA where the clip says so."""
    return list(iter_clip(data, clip, n_frames))


def iter_clip(data: Path, clip: str, n_frames: int) -> Iterator[np.ndarray]:
    """decode_clip one frame at a time."""
    video, resize_wh = CLIPS[clip]
    cap = cv2.VideoCapture(str(data / video))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {data / video}")
    for _ in range(n_frames):
        ok, frame = cap.read()
        if not ok:
            break
        if resize_wh is not None:
            frame = cv2.resize(frame, resize_wh, interpolation=cv2.INTER_AREA)
        yield frame
    cap.release()


def reference_detector(threads: int) -> Detector:
    """facenet-pytorch's MTCNN on CPU; the BGR->RGB copy is part of each timed call."""
    import torch
    import torchvision
    from facenet_pytorch import MTCNN

    VERSIONS.update(torch=torch.__version__, torchvision=torchvision.__version__)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    mtcnn = MTCNN(
        keep_all=True,
        min_face_size=MIN_FACE_SIZE,
        thresholds=list(THRESHOLDS),
        factor=SCALE_FACTOR,
        post_process=False,
        device="cpu",
    )

    def detect(frames: list[np.ndarray]) -> list[Detections]:
        rgb = [np.ascontiguousarray(bgr[:, :, ::-1]) for bgr in frames]
        if len(rgb) == 1:
            found = [mtcnn.detect(rgb[0], landmarks=True)]
        else:  # facenet-pytorch batches frames of one size through each stage
            found = list(zip(*mtcnn.detect(rgb, landmarks=True), strict=True))
        out = []
        for boxes, probs, points in found:
            if boxes is None:
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))))
            else:
                out.append((np.asarray(boxes), np.asarray(probs, dtype=float), points))
        return out

    return detect


def facewatch_detector(
    models: Path, threads: int, border: str | None, backend: str | None, lanes: int | None
) -> Detector:
    """facewatch's MTCNN (default backend and lanes unless told otherwise); takes BGR frames
    as they come from OpenCV."""
    sys.path.insert(0, str(REPO))
    import onnxruntime

    from engines.detectors import load_detector
    from engines.openvino_backend import import_openvino

    openvino = import_openvino()

    VERSIONS.update(onnxruntime=onnxruntime.__version__, openvino=openvino.__version__)

    det = load_detector(
        str(models),
        **({"backend": backend} if backend else {}),
        threads=threads,
        lanes=lanes,
        min_face_size=MIN_FACE_SIZE,
        thresholds=THRESHOLDS,
        scale_factor=SCALE_FACTOR,
        **({"border": border} if border else {}),
    )

    def detect(frames: list[np.ndarray]) -> list[Detections]:
        return [(r.bbox_xyxy, r.score, r.landmarks) for r in det.detect(frames)]

    return detect


def cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (or of its waited-for children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float | None:
    """CPU seconds all the machine's cores have been busy since boot (/proc/stat: all but idle
    and iowait; steal counts, another VM's use); None where there is no /proc/stat."""
    try:
        ticks = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# Over this, a run is not comparable: the 1-minute load average before the first worker, or
# the cores other processes used on average while a worker ran.
BUSY_LIMIT = 0.5


def run_measured(cmd: list[str], env: dict[str, str] | None = None):
    """Run a worker; returns (the finished process, what the machine did meanwhile): the
    1-minute load average before it, its CPU seconds and wall seconds, and the cores that
    other processes used on average while it ran (None without /proc/stat)."""
    load = os.getloadavg()[0]
    busy, children, start = machine_busy_s(), cpu_s(resource.RUSAGE_CHILDREN), time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, env=env)
    wall = time.monotonic() - start
    worker_cpu = cpu_s(resource.RUSAGE_CHILDREN) - children
    busy_after = machine_busy_s()
    others = None
    if busy is not None and busy_after is not None and wall > 0:
        others = max(0.0, (busy_after - busy - worker_cpu) / wall)
    machine = {
        "load_1min_before": load,
        "worker_cpu_s": worker_cpu,
        "worker_wall_s": wall,
        "others_cores": others,
    }
    return proc, machine


def machine_summary(machines: list[dict]) -> list[str]:
    """Lines under the results: the load the workers ran under, and a WARNING when others'
    load was over BUSY_LIMIT (machines: each worker's, in the order they ran)."""
    if not machines:
        return []
    loads = [m["load_1min_before"] for m in machines]
    others = [m["others_cores"] for m in machines if m.get("others_cores") is not None]
    lines = [
        f"machine: 1-minute load average {loads[0]:.2f} before the first worker "
        f"({min(loads):.2f}-{max(loads):.2f} before each, the previous workers' included); "
        + (
            f"other processes used {max(others):.2f} cores at most while a worker ran"
            if others
            else "no /proc/stat: what other processes used is not known"
        )
    ]
    if loads[0] > BUSY_LIMIT or (others and max(others) > BUSY_LIMIT):
        lines.append(
            f"WARNING: the machine was not idle (over {BUSY_LIMIT} before the first worker or "
            "beside one): these figures are not comparable. The reference's OpenMP threads "
            "spin while they wait and slow down most under load, which inflates the speed-ups "
            "(bench/README.md, 'Run them on an idle machine')."
        )
    return lines


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_detector(detect: Detector, frames: list[np.ndarray], args: argparse.Namespace):
    """Warm up, then time frames[warmup:] in calls of `batch` frames, `repeat` times.

    Returns (best fps over the repeats, every call's ms, the first pass's detections)."""
    warmup, batch = args.warmup, args.batch
    if batch == 1:
        for frame in frames[:warmup]:
            detect([frame])
    else:  # one untimed call of the batch size that the timed calls use
        detect([frames[i % len(frames)] for i in range(batch)])
    timed = frames[warmup:]
    calls_ms, detections, best_fps = [], [], 0.0
    for rep in range(args.repeat):
        start = time.perf_counter()
        for i in range(0, len(timed), batch):
            t0 = time.perf_counter()
            out = detect(timed[i : i + batch])
            calls_ms.append((time.perf_counter() - t0) * 1000)
            if rep == 0:
                detections.extend(out)
        best_fps = max(best_fps, len(timed) / (time.perf_counter() - start))
    return best_fps, calls_ms, detections


def run_worker(args: argparse.Namespace) -> int:
    """One implementation on one clip at one batch size; writes its result JSON to --result.

    Before the timed run, a one-frame-per-call worker also runs --stream-frames frames as a
    camera daemon would, each decoded just before it is detected, and notes its peak RSS
    then, before the frames for the timing are decoded and held."""
    if args.worker == "reference":
        detect = reference_detector(args.threads)
    else:
        detect = facewatch_detector(
            args.models, args.threads, args.border, args.backend, args.lanes
        )
    rss_loaded = max_rss_mb()
    rss_stream = None
    if args.batch == 1 and args.stream_frames > 0:
        for frame in iter_clip(args.data, args.clip, args.stream_frames):
            detect([frame])
        rss_stream = max_rss_mb()
    frames = decode_clip(args.data, args.clip, args.frames)
    if len(frames) <= args.warmup:
        raise SystemExit(f"{args.clip}: only {len(frames)} frames, need more than --warmup")
    rss_decoded = max_rss_mb()
    cpu_before = cpu_s()
    fps, calls_ms, detections = time_detector(detect, frames, args)
    timed_cpu_s = cpu_s() - cpu_before
    result = {
        "impl": args.worker,
        "clip": args.clip,
        "batch": args.batch,
        "threads": args.threads,
        "python": sys.executable,
        "versions": VERSIONS,
        "resolution_wh": [frames[0].shape[1], frames[0].shape[0]],
        "frames_timed": len(frames) - args.warmup,
        "repeat": args.repeat,
        "fps": fps,
        "call_ms_median": statistics.median(calls_ms),
        "call_ms_max": max(calls_ms),
        "cpu_ms_per_frame": timed_cpu_s * 1000 / ((len(frames) - args.warmup) * args.repeat),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "rss_after_load_mb": rss_loaded,
        "rss_stream_peak_mb": rss_stream,
        "rss_after_decode_mb": rss_decoded,
        "rss_peak_mb": max_rss_mb(),
        "detections": [
            {
                "bbox_xyxy": np.asarray(b).tolist(),
                "score": np.asarray(s).tolist(),
                "landmarks": np.asarray(lm).tolist(),
            }
            for b, s, lm in detections
        ],
    }
    Path(args.result).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------- comparison


def compare(ref: list[dict], ours: list[dict], first_frame: int) -> dict:
    """Agreement of two runs over the same frames: matches, misses, extras, worst deviations.

    `first_frame` is the clip index of the first compared frame (the timed frames start after
    the warm-up), so mismatched_frames are clip frame indices."""
    matched = ref_faces = extra = 0
    worst_lm_px = worst_score = 0.0
    mismatched_frames = []
    for frame, (r, o) in enumerate(zip(ref, ours, strict=True)):
        rb, ob = (
            np.asarray(r["bbox_xyxy"]).reshape(-1, 4),
            np.asarray(o["bbox_xyxy"]).reshape(-1, 4),
        )
        pairs = greedy_match(rb, ob, AGREE_IOU)
        matched += len(pairs)
        ref_faces += len(rb)
        extra += len(ob) - len(pairs)
        if len(pairs) != len(rb) or len(ob) != len(rb):
            mismatched_frames.append(first_frame + frame)
        for ri, oi in pairs:
            rl, ol = np.asarray(r["landmarks"][ri]), np.asarray(o["landmarks"][oi])
            worst_lm_px = max(worst_lm_px, float(np.abs(rl - ol).max()))
            worst_score = max(worst_score, abs(r["score"][ri] - o["score"][oi]))
    return {
        "ref_faces": ref_faces,
        "matched": matched,
        "extra": extra,
        "mismatched_frames": mismatched_frames,
        "max_landmark_dev_px": worst_lm_px,
        "max_score_dev": worst_score,
    }


def agreement_text(agree: dict | None) -> str:
    if agree is None:
        return "n/a"
    text = f"{agree['matched']}/{agree['ref_faces']}"
    if agree["extra"]:
        text += f" (+{agree['extra']} extra)"
    if agree["matched"]:
        text += f", landmarks ≤{agree['max_landmark_dev_px']:.2f} px"
    return text


# ---------------------------------------------------------------- driver


def run_one(args: argparse.Namespace, impl: str, clip: str, batch: int) -> dict:
    """Run one worker subprocess; returns its result, or {"error": ...} if it failed."""
    python = args.python_ref if impl == "reference" else args.python_ours
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            python, str(Path(__file__).resolve()), "--worker", impl, "--clip", clip,
            "--batch", str(batch), "--threads", str(args.threads), "--frames", str(args.frames),
            "--warmup", str(args.warmup), "--repeat", str(args.repeat), "--data", str(args.data),
            "--models", str(args.models), "--result", out.name,
            "--stream-frames", str(args.stream_frames),
        ]  # fmt: skip
        if args.border:
            cmd += ["--border", args.border]
        if args.backend:
            cmd += ["--backend", args.backend]
        if args.lanes:
            cmd += ["--lanes", str(args.lanes)]
        env = None
        if impl == "reference" and args.ref_wait_policy == "passive":
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        print(f"[bench] {impl} {clip} batch {batch} ...", file=sys.stderr, flush=True)
        proc, machine = run_measured(cmd, env)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"[bench]   failed: {' | '.join(tail)}", file=sys.stderr)
            return {"error": "\n".join(tail), "machine": machine}
        return {**json.loads(Path(out.name).read_text()), "machine": machine}


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + unit


def table(rows: list[dict], batch: int) -> str:
    """The markdown summary table; each speed-up is against the reference at the same batch."""
    head = (
        f"| clip | resolution | reference fps b1 / b{batch} | facewatch fps b1 / b{batch} "
        f"| speed-up b1 / b{batch} | peak RSS MB streaming ref / facewatch "
        f"| peak RSS MB with the clip held ref / facewatch b1 / b{batch} "
        f"| agreement b1 (b{batch}) | CPU ms a frame ref / facewatch b1 (b{batch}) |"
    )
    lines = [head, "|" + "---|" * 9]
    for row in rows:
        ref, ref_bb, b1, bb = row["reference"], row["ref_bB"], row["ours_b1"], row["ours_bB"]
        speed = [
            None
            if ours.get("fps") is None or base.get("fps") is None
            else ours["fps"] / base["fps"]
            for ours, base in ((b1, ref), (bb, ref_bb))
        ]
        stream = "/".join(fmt(r.get("rss_stream_peak_mb"), ".0f") for r in (ref, b1))
        rss = "/".join(fmt(r.get("rss_peak_mb"), ".0f") for r in (ref, b1, bb))
        res = ref.get("resolution_wh") or b1.get("resolution_wh")
        agree = f"{agreement_text(row['agree_b1'])} ({agreement_text(row['agree_bB'])})"
        cpu = [fmt(r.get("cpu_ms_per_frame"), ".0f") for r in (ref, b1, ref_bb, bb)]
        lines.append(
            f"| {row['clip']} | {'x'.join(map(str, res)) if res else 'n/a'} "
            f"| {fps_text(ref)} / {fps_text(ref_bb)} | {fps_text(b1)} / {fps_text(bb)} "
            f"| {fmt(speed[0], '.2f', 'x')} / {fmt(speed[1], '.2f', 'x')} | {stream} | {rss} | {agree} "
            f"| {cpu[0]} / {cpu[1]} ({cpu[2]} / {cpu[3]}) |"
        )
    return "\n".join(lines)


def fps_text(result: dict) -> str:
    """Frames/s; over several rounds the median, with the range."""
    rounds = result.get("fps_rounds") or []
    text = fmt(result.get("fps"), ".2f")
    if len(rounds) > 1:
        text += f" ({min(rounds):.2f}-{max(rounds):.2f})"
    return text


def merge_rounds(results: list[dict]) -> dict:
    """One worker's results over the rounds: the median fps, the highest RSS, the first
    round's detections and the rest."""
    ok = [r for r in results if "fps" in r]
    if not ok:
        return results[0]
    merged = dict(ok[0])
    merged["fps_rounds"] = [r["fps"] for r in ok]
    merged["fps"] = statistics.median(merged["fps_rounds"])
    cpu = [r["cpu_ms_per_frame"] for r in ok if r.get("cpu_ms_per_frame") is not None]
    merged["cpu_ms_per_frame"] = statistics.median(cpu) if cpu else None
    merged["machine"] = [r.get("machine") for r in results]
    for key in ("rss_peak_mb", "rss_stream_peak_mb", "rss_after_load_mb", "rss_after_decode_mb"):
        values = [r[key] for r in ok if r.get(key) is not None]
        merged[key] = max(values) if values else None
    return merged


def run_driver(args: argparse.Namespace) -> int:
    rows = []
    machines: list[dict] = []  # each worker's, in the order they ran
    for clip in args.clips:
        runs: dict[str, list[dict]] = {
            key: [] for key in ("reference", "ref_bB", "ours_b1", "ours_bB")
        }
        plan = [
            ("reference", "reference", 1),
            ("ours_b1", "facewatch", 1),
            ("ref_bB", "reference", args.batch),
            ("ours_bB", "facewatch", args.batch),
        ]
        for _ in range(args.rounds):  # side by side, again and again
            for key, impl, batch in plan:
                runs[key].append(run_one(args, impl, clip, batch))
                result = runs[key][-1]
                machines.append(
                    {"worker": f"{clip} {impl} b{batch}", **result["machine"]}
                    | ({"failed": True} if "error" in result else {})
                )
        ref, b1 = merge_rounds(runs["reference"]), merge_rounds(runs["ours_b1"])
        ref_bb, bb = merge_rounds(runs["ref_bB"]), merge_rounds(runs["ours_bB"])
        row = {"clip": clip, "reference": ref, "ref_bB": ref_bb, "ours_b1": b1, "ours_bB": bb}
        for key, ours in (("agree_b1", b1), ("agree_bB", bb)):
            ok = "detections" in ref and "detections" in ours
            row[key] = compare(ref["detections"], ours["detections"], args.warmup) if ok else None
        rows.append(row)
    print(table(rows, args.batch))
    for row in rows:
        for key in ("agree_b1", "agree_bB"):
            agree = row[key]
            if agree and agree["mismatched_frames"]:
                print(f"{row['clip']} {key}: frames that differ: {agree['mismatched_frames']}")
    for line in machine_summary(machines):
        print(line)
    failed = [m["worker"] for m in machines if m.get("failed")]
    if failed:
        print(f"FAILED: {len(failed)} of {len(machines)} workers ({', '.join(failed)})")
    if args.json:
        for row in rows:  # keep the JSON small: detections only matter for the comparison
            for key in ("reference", "ref_bB", "ours_b1", "ours_bB"):
                row[key] = {k: v for k, v in row[key].items() if k != "detections"}
        config = {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("json", "worker", "clip", "result")
        }
        out = {
            "failed": bool(failed),  # a worker did not run: its rows are errors
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "config": config,
            "rows": rows,
            "machine": machines,
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=lambda s: s.split(","), default=list(CLIPS),
                   help=f"comma-separated, from {','.join(CLIPS)}")  # fmt: skip
    p.add_argument("--frames", type=int, default=40, help="frames decoded per clip")
    p.add_argument("--warmup", type=int, default=2, help="untimed frames first")
    p.add_argument("--repeat", type=int, default=1, help="timed passes; the best one counts")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each clip's reference and facewatch workers this many times, alternating; "
        "the median frames/s counts (this machine's speed drifts by about 10%% over minutes)",
    )
    p.add_argument(
        "--stream-frames",
        type=int,
        default=10,
        help="one-frame-per-call workers first detect this many frames decoded one at a time, "
        "for the streaming peak RSS (0: skip)",
    )
    p.add_argument("--threads", type=int, default=2, help="threads for both implementations")
    p.add_argument(
        "--batch",
        type=int,
        default=8,
        help="frames per call, besides 1, for both implementations (2 or more)",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="facewatch MTCNN models")
    p.add_argument(
        "--border",
        choices=["pad", "clip"],
        default="clip",
        help="facewatch's border crops (default 'clip', what facenet-pytorch does, so the "
        "detections can agree; 'pad' is facewatch's own default, same speed)",
    )
    p.add_argument("--backend", help="facewatch's MTCNN backend (default: MTCNN.load's)")
    p.add_argument("--lanes", type=int, help="facewatch's parallel lanes (default: the backend's)")
    p.add_argument("--python-ref", default=sys.executable, help="interpreter with facenet-pytorch")
    p.add_argument(
        "--ref-wait-policy",
        choices=["default", "passive"],
        default="default",
        help="'passive' runs the reference with OMP_WAIT_POLICY=PASSIVE (its threads sleep "
        "instead of spinning while they wait); 'default' leaves it as users run it",
    )
    p.add_argument("--python-ours", default=sys.executable, help="interpreter for facewatch")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--worker", choices=["reference", "facewatch"], help=argparse.SUPPRESS)
    p.add_argument("--clip", choices=list(CLIPS), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.clips) - set(CLIPS)
    if unknown:
        p.error(f"unknown clips {sorted(unknown)}; choose from {list(CLIPS)}")
    if not args.worker:  # (a worker is told its batch: 1 or --batch)
        if args.batch < 2:
            p.error(
                f"--batch {args.batch}: must be 2 or more (one frame a call is measured anyway)"
            )
        for option, python in (
            ("--python-ref", args.python_ref),
            ("--python-ours", args.python_ours),
        ):
            if shutil.which(python) is None:
                p.error(
                    f"{option} {python}: no such interpreter (bench/setup_reference.sh makes .venv-ref)"
                )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_worker(args) if args.worker else run_driver(args)


if __name__ == "__main__":
    sys.exit(main())
