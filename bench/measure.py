"""What the benchmarks record about the machine they ran on: CPU seconds, the cores the
whole machine was busy, the load before a worker and the cores other processes used beside
it, peak RSS; and the lines that say so under a table, with a WARNING when the figures are
not comparable (bench/README.md, 'Run them on an idle machine')."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Over this, a run is not comparable: the 1-minute load average before the first worker, or
# the cores other processes used on average while a worker ran.
BUSY_LIMIT = 0.5


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


def others_cores(
    busy_before: float | None, busy_after: float | None, own_cpu_s: float, wall_s: float
) -> float | None:
    """The cores other processes used on average over ``wall_s``: the machine's busy seconds
    (machine_busy_s before and after) less ``own_cpu_s``; None when either is unknown."""
    if busy_before is None or busy_after is None or wall_s <= 0:
        return None
    return max(0.0, (busy_after - busy_before - own_cpu_s) / wall_s)


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, float | None]]:
    """Run a worker; returns (the finished process, what the machine did meanwhile): the
    1-minute load average before it, its CPU seconds and wall seconds, and the cores that
    other processes used on average while it ran (None without /proc/stat)."""
    load = os.getloadavg()[0]
    busy, children, start = machine_busy_s(), cpu_s(resource.RUSAGE_CHILDREN), time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, env=env)
    wall = time.monotonic() - start
    worker_cpu = cpu_s(resource.RUSAGE_CHILDREN) - children
    machine = {
        "load_1min_before": load,
        "worker_cpu_s": worker_cpu,
        "worker_wall_s": wall,
        "others_cores": others_cores(busy, machine_busy_s(), worker_cpu, wall),
    }
    return proc, machine


def machine_summary(machines: list[dict[str, Any]]) -> list[str]:
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
