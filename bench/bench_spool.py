"""Disk writes of the MQTT spool per message (SD cards): every event and face snapshot goes
through it, broker up or down. Each case puts ``--messages`` messages through a new spool as
the daemon does (``append``; with the broker up, ``delete`` once the broker took it) and
reads what the process wrote to the disk (/proc/self/io write_bytes, after a sync).

Old and new code side by side: run it once per tree, the same way, e.g.

    .venv/bin/python bench/bench_spool.py --out bench/results/spool_writes.json
    git worktree add /tmp/old ec43570
    PYTHONPATH=/tmp/old .venv/bin/python bench/bench_spool.py --label ec43570 \\
        --out bench/results/spool_writes.json

(each run adds its row to ``--out``). Linux only. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from daemon.spool import Spool

EVENT = b'{"event_id":"67b8817baf554412a13a50796981ee0d","type":"confirmed",' + b"x" * 390
SNAPSHOT = b"\xff\xd8" + bytes(range(256)) * 24  # about a face snapshot's JPEG (6 kB)
CASES = {  # name -> (a snapshot with each event, the broker takes them)
    "broker up": (False, True),
    "broker down": (False, False),
    "broker up, with snapshots": (True, True),
}


def written() -> int:
    os.sync()
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise OSError("no write_bytes in /proc/self/io")


def bytes_per_event(messages: int, snapshots: bool, sent: bool) -> float:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as folder:  # (on the disk, not tmpfs)
        spool = Spool(folder)
        before = written()
        for _ in range(messages):
            spool.append("facewatch/node/events/door", EVENT, kind="event")
            if snapshots:
                spool.append("facewatch/node/snapshots/door/x", SNAPSHOT, kind="raw")
            while sent and (pending := spool.peek(1)):
                spool.delete(pending[0].row_id)
        spool.close()
        return (written() - before) / messages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=1000, help="events per case")
    parser.add_argument("--label", help="this run's name (none: the commit, as git describe says)")
    parser.add_argument("--out", type=Path, help="JSON file this run's row is added to")
    args = parser.parse_args()
    label = (
        args.label
        or subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True
        ).stdout.strip()
    )
    row = {name: round(bytes_per_event(args.messages, *case)) for name, case in CASES.items()}
    print(f"{label}: bytes written per event ({len(EVENT)} B; snapshots {len(SNAPSHOT)} B)")
    for name, value in row.items():
        print(f"  {name:28} {value:8,}")
    if args.out:
        runs = json.loads(args.out.read_text()) if args.out.exists() else {}
        runs[label] = {"messages": args.messages, "bytes_per_event": row}
        args.out.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
