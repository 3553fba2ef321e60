"""What bench_daemon.py (and bench_motion.py through it) reports of a run, from two scrapes of
the daemon's metrics, the events received between them and its RSS samples: rates and drops
per camera, latencies, memory, CPU and the work per processed frame."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

STAGES = ("detect", "track", "embed", "match", "archive")


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def figures(
    names: list[str],
    before: dict[str, float],
    after: dict[str, float],
    elapsed: float,
    events: list[dict[str, Any]],
    rss: list[float],
) -> dict[str, Any]:
    """Rates, latencies, memory and stage times between two scrapes of the daemon's metrics."""

    def change(metric: str) -> float:
        return delta(after, before, metric)

    frames = sum(change(f'facewatch_frames_processed_total{{camera="{c}"}}') for c in names)
    cpu = change("process_cpu_seconds_total")
    return {
        "seconds": round(elapsed, 1),
        "per_camera": _per_camera(change, names, elapsed),
        "events": len(events),
        "confirmed": sum(e["type"] == "confirmed" for e in events),
        **_latencies(events),
        "rss_max_mb": round(max(rss), 1) if rss else None,
        "rss_first_last_mb": [round(rss[0], 1), round(rss[-1], 1)] if rss else None,
        "cpu_s_per_s": round(cpu / elapsed, 2),
        "cpu_ms_per_frame": round(1000 * cpu / max(frames, 1), 1),
        **_work_per_frame(change, names, frames),
    }


def _per_camera(
    change: Callable[[str], float], names: list[str], elapsed: float
) -> dict[str, dict[str, float]]:
    """Each camera's frames read, processed and still a second, and frames dropped."""
    return {
        c: {
            "read_fps": change(f'facewatch_frames_read_total{{camera="{c}"}}') / elapsed,
            "processed_fps": change(f'facewatch_frames_processed_total{{camera="{c}"}}') / elapsed,
            "dropped": change(f'facewatch_frames_dropped_total{{camera="{c}"}}'),
            "still_fps": change(f'facewatch_frames_still_total{{camera="{c}"}}') / elapsed,
        }
        for c in names
    }


def _latencies(events: list[dict[str, Any]]) -> dict[str, float | None]:
    """p50, p99 and the worst of frame -> published, in ms, over the events but ``left``."""

    def ms(values: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(values, q)) * 1000, 1) if len(values) else None

    # "left" events wait tracking.lost_after_s after the last frame by design: not latency
    latency = np.array([e["published_ts"] - e["frame_ts"] for e in events if e["type"] != "left"])
    return {
        "latency_p50_ms": ms(latency, 50),
        "latency_p99_ms": ms(latency, 99),
        "latency_max_ms": ms(latency, 100),
    }


def _work_per_frame(
    change: Callable[[str], float], names: list[str], frames: float
) -> dict[str, object]:
    """Stage ms, batch size, faces found and embedded per processed frame."""

    def per_frame(total: float) -> float:
        return round(total / max(frames, 1), 2)

    return {
        "stage_ms_per_frame": {
            s: round(
                1000 * change(f'facewatch_stage_seconds_sum{{stage="{s}"}}') / max(frames, 1), 1
            )
            for s in STAGES
        },
        "mean_batch_frames": round(
            change("facewatch_batch_frames_sum") / max(change("facewatch_batch_frames_count"), 1), 2
        ),
        "faces_per_frame": per_frame(
            sum(change(f'facewatch_faces_detected_total{{camera="{c}"}}') for c in names)
        ),
        "embedded_per_frame": per_frame(
            sum(change(f'facewatch_faces_embedded_total{{camera="{c}"}}') for c in names)
        ),
    }
