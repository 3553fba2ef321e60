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
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from measure import machine_summary, run_measured  # noqa: E402
from mtcnn_clips import CLIPS, DEFAULT_DATA, DEFAULT_MODELS  # noqa: E402  (bench/, the script's folder)
from mtcnn_worker import run_worker  # noqa: E402

from engines.boxes import greedy_match  # noqa: E402  (the work tree's engines)

AGREE_IOU = 0.9
ROW_KEYS = ("reference", "ref_bB", "ours_b1", "ours_bB")  # a row's four workers


# ---------------------------------------------------------------- comparison


def compare(
    ref: list[dict[str, Any]], ours: list[dict[str, Any]], first_frame: int
) -> dict[str, Any]:
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


def agreement_text(agree: dict[str, Any] | None) -> str:
    if agree is None:
        return "n/a"
    text = f"{agree['matched']}/{agree['ref_faces']}"
    if agree["extra"]:
        text += f" (+{agree['extra']} extra)"
    if agree["matched"]:
        text += f", landmarks ≤{agree['max_landmark_dev_px']:.2f} px"
    return text


# ---------------------------------------------------------------- driver


def run_one(args: argparse.Namespace, impl: str, clip: str, batch: int) -> dict[str, Any]:
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


def table(rows: list[dict[str, Any]], batch: int) -> str:
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


def fps_text(result: dict[str, Any]) -> str:
    """Frames/s; over several rounds the median, with the range."""
    rounds = result.get("fps_rounds") or []
    text = fmt(result.get("fps"), ".2f")
    if len(rounds) > 1:
        text += f" ({min(rounds):.2f}-{max(rounds):.2f})"
    return text


def merge_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
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


def run_clip(args: argparse.Namespace, clip: str, machines: list[dict[str, Any]]) -> dict[str, Any]:
    """One clip's row: its four workers, --rounds times side by side, merged, and their
    agreement; each worker's machine figures are appended to ``machines`` as it ends."""
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in ROW_KEYS}
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
    row: dict[str, Any] = {
        "clip": clip,
        "reference": ref,
        "ref_bB": ref_bb,
        "ours_b1": b1,
        "ours_bB": bb,
    }
    for key, ours in (("agree_b1", b1), ("agree_bB", bb)):
        ok = "detections" in ref and "detections" in ours
        row[key] = compare(ref["detections"], ours["detections"], args.warmup) if ok else None
    return row


def print_report(
    rows: list[dict[str, Any]], machines: list[dict[str, Any]], batch: int
) -> list[str]:
    """The table, the frames that differ, the machine's lines; returns the failed workers."""
    print(table(rows, batch))
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
    return failed


def write_json(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    machines: list[dict[str, Any]],
    failed: bool,
) -> None:
    """The results to --json, without the detections (they only matter for the comparison)."""
    for row in rows:  # keep the JSON small: detections only matter for the comparison
        for key in ROW_KEYS:
            row[key] = {k: v for k, v in row[key].items() if k != "detections"}
    config = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in ("json", "worker", "clip", "result")
    }
    out = {
        "failed": failed,  # a worker did not run: its rows are errors
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "config": config,
        "rows": rows,
        "machine": machines,
    }
    Path(args.json).write_text(json.dumps(out, indent=1))


def run_driver(args: argparse.Namespace) -> int:
    machines: list[dict[str, Any]] = []  # each worker's, in the order they ran
    rows = [run_clip(args, clip, machines) for clip in args.clips]
    failed = print_report(rows, machines, args.batch)
    if args.json:
        write_json(args, rows, machines, bool(failed))
    return 1 if failed else 0


def add_run_options(p: argparse.ArgumentParser) -> None:
    """What is measured: the clips, frames, rounds, threads and batch size."""
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


def add_implementation_options(p: argparse.ArgumentParser) -> None:
    """Where the data and models are, how each side runs, and the worker's hidden options."""
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


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Known clips; for the driver, a batch of 2 or more and interpreters that exist."""
    unknown = set(args.clips) - set(CLIPS)
    if unknown:
        p.error(f"unknown clips {sorted(unknown)}; choose from {list(CLIPS)}")
    if args.worker:  # (a worker is told its batch: 1 or --batch)
        return
    if args.batch < 2:
        p.error(f"--batch {args.batch}: must be 2 or more (one frame a call is measured anyway)")
    for option, python in (("--python-ref", args.python_ref), ("--python-ours", args.python_ours)):
        if shutil.which(python) is None:
            p.error(
                f"{option} {python}: no such interpreter (bench/setup_reference.sh makes .venv-ref)"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_options(p)
    add_implementation_options(p)
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_worker(args) if args.worker else run_driver(args)


if __name__ == "__main__":
    sys.exit(main())
