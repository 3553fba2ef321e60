"""The tests' RTSP server (tests/integration/rtsp_server.py), printing when chosen frames go out.

    /usr/bin/python3 bench/rtsp_marked.py --marks 240:appear,476:leave --port 8554 door=clip.mp4

serves as that server does and, right after it pushes unit (frame) 240 of a loop of the clip,
prints "MARK appear LOOP UNIX_TIME" on stdout (bench_arrivals.py reads them). Runs under the
system Python, which has GStreamer's introspection bindings, as the server does.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

SERVER = Path(__file__).resolve().parent.parent / "tests" / "integration" / "rtsp_server.py"


def parse_marks(text: str) -> dict[int, str]:
    """'240:appear,476:leave' -> {240: 'appear', 476: 'leave'}."""
    marks = {}
    for item in filter(None, text.split(",")):
        index, _, name = item.partition(":")
        marks[int(index)] = name
    return marks


class MarkingSource:
    """Stands in for the server's appsrc: passes every call on, and prints a mark after the
    push of a marked unit (the server pushes one unit a frame, the clip's in order)."""

    def __init__(self, appsrc: Any, units: int, marks: dict[int, str]) -> None:
        self.appsrc, self.units, self.marks, self.pushed = appsrc, units, marks, 0

    def emit(self, signal: str, *args: Any) -> Any:
        result = self.appsrc.emit(signal, *args)
        if signal == "push-buffer":
            loop, index = divmod(self.pushed, self.units)
            self.pushed += 1
            if index in self.marks:
                print(f"MARK {self.marks[index]} {loop} {time.time():.3f}", flush=True)
        return result


def main() -> int:
    argv = sys.argv[1:]
    marks: dict[int, str] = {}
    if "--marks" in argv:
        at = argv.index("--marks")
        marks = parse_marks(argv[at + 1])
        del argv[at : at + 2]
    spec = importlib.util.spec_from_file_location("rtsp_server", SERVER)
    assert spec and spec.loader
    server: Any = importlib.util.module_from_spec(spec)
    sys.modules["rtsp_server"] = server  # as an import would (dataclasses look their module up)
    spec.loader.exec_module(server)
    feed = server.feed

    def marked_feed(appsrc: Any, clip: Any, stop: Any) -> None:
        feed(MarkingSource(appsrc, len(clip.units), marks), clip, stop)

    server.feed = marked_feed  # what each client's media runs (LoopingFactory._configure)
    sys.argv = [str(SERVER), *argv]
    return int(server.main())


if __name__ == "__main__":
    sys.exit(main())
