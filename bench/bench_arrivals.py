"""How soon events come: from a person's first frame on an RTSP camera to the events a subscriber receives, and from his leaving to the end of his visit.

The clip, made once in bench/.cache from configs/demo/hamilton_360p.mp4's own frames: 8 s of
an empty stage (frame 85's curtain, its right half mirrored over the left), Lin-Manuel Miranda
(frames 88-205 forward, then backward: 7.9 s), 8 s of the empty stage again; 23.9 s a loop.
The tests' RTSP server loops it (bench/rtsp_marked.py: it prints the wall-clock time at which
it sends his first frame, "appear", and the first empty frame after him, "leave"). A real
mosquitto, ``facewatch run`` on a shipped config adapted to them (the camera, the ports, the
paths; the real FaceNet model), and a subscriber that notes when each message arrives. Per
visit: appear -> the camera's first event, -> his naming (``--stranger``: -> his
announcement as unknown, with a gallery that lacks him), leave -> his track's ``left``,
leave -> the camera's faces state back at 0; and the false strangers announced meanwhile.
Run from the repository root:

    .venv/bin/python bench/bench_arrivals.py --config default --visits 6
    .venv/bin/python bench/bench_arrivals.py --config rtsp-example --stranger --visits 6

Writes --out and prints a table; it measures, it asserts nothing. The waits are made of frame
intervals and votes, not of CPU, so they hold on a loaded machine as long as it keeps up
with the frames: the 1-minute load average and the cores other processes used are recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from arrivals_analysis import CAMERA, PERSON, analyse, received, table  # noqa: E402  (bench/, the script's folder)
from measure import machine_busy_s, others_cores  # noqa: E402
from script_support import CACHE, out_argument, stop_on_sigterm  # noqa: E402

from tests.integration.services import (  # noqa: E402
    PEOPLE,
    Daemon,
    Mosquitto,
    RtspServer,
    Subscriber,
    enroll,
    free_port,
    wait_for,
)

SOURCE = REPO / "configs" / "demo" / "hamilton_360p.mp4"
MODEL = REPO / "models" / "facenet" / "facenet.onnx"
MARKED_SERVER = Path(__file__).with_name("rtsp_marked.py")
CONFIGS = {
    "default": REPO / "configs" / "default.yaml",
    "rtsp-example": REPO / "configs" / "rtsp-example.yaml",
}
EMPTY_S = 8.0  # empty stage before and after him
BACKGROUND, FIRST, LAST = 85, 88, 205  # frames of the source: the curtain, his first and last
DEFAULT_OUT = CACHE / "arrivals.json"  # not bench/results/: a rerun keeps the committed one
AFTER_LEAVE_S = 3.0  # beyond lost_after_s: a visit's last events come 0.25 s and the stream's
# delay after it


def clip_frames() -> tuple[list[Any], int, int]:
    """The clip's frames (BGR), the index of his first frame and of the first empty one after."""
    import cv2

    capture = cv2.VideoCapture(str(SOURCE))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    rate = 30
    stage = frames[BACKGROUND].copy()
    width = stage.shape[1]
    stage[:, : width // 2] = cv2.flip(frames[BACKGROUND][:, width // 2 :], 1)
    person = frames[FIRST : LAST + 1]
    empty = [stage] * round(EMPTY_S * rate)
    sequence = empty + person + person[::-1] + empty
    return sequence, len(empty), len(empty) + 2 * len(person)


def make_clip() -> tuple[Path, int, int]:
    """The clip as H.264 at 30 fps (a keyframe a second, no B-frames), made once; with the
    indices of the appear and leave frames."""
    sequence, appear, leave = clip_frames()
    out = CACHE / f"arrivals_{BACKGROUND}_{FIRST}_{LAST}.mp4"
    if not out.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        height, width = sequence[0].shape[:2]
        partial = out.with_suffix(".part.mp4")
        pipeline = (
            f"fdsrc ! rawvideoparse width={width} height={height} format=bgr framerate=30/1 "
            "! videoconvert ! x264enc speed-preset=medium key-int-max=30 bframes=0 "
            f'! h264parse ! mp4mux ! filesink location="{partial}"'
        )
        encoder = subprocess.Popen(
            ["gst-launch-1.0", "-q", *pipeline.split()], stdin=subprocess.PIPE
        )
        assert encoder.stdin is not None
        for frame in sequence:
            encoder.stdin.write(frame.tobytes())
        encoder.stdin.close()
        if encoder.wait() != 0:
            raise SystemExit("gst-launch-1.0 could not encode the clip")
        partial.rename(out)
    return out, appear, leave


class MarkedRtspServer(RtspServer):
    """The tests' RTSP server, through bench/rtsp_marked.py: prints the marks."""

    def __init__(self, folder: Path, clip: Path, marks: dict[int, str], port: int | None) -> None:
        super().__init__(folder, {CAMERA: clip}, port=port)
        spec = ",".join(f"{index}:{name}" for index, name in marks.items())
        self.base_args[1:2] = [str(MARKED_SERVER), "--marks", spec]
        self._use_port(self.port)

    def _use_port(self, port: int) -> None:
        self.port = port
        self.args = [*self.base_args[:4], "--port", str(port), *self.base_args[4:]]
        self.log_path = self.folder / f"rtsp-{port}.log"

    def marks(self) -> list[tuple[str, int, float]]:
        """(kind, loop, unix time) of every mark printed so far."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("MARK "):
                _, kind, loop, when = line.split()
                found.append((kind, int(loop), float(when)))
        return found


class TimedSubscriber(Subscriber):
    """Every message, with the time.time() it arrived and its payload parsed when JSON."""

    def __init__(self, port: int) -> None:
        self.timed: list[tuple[float, str, Any]] = []
        super().__init__(port, "#")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.time()
        try:
            payload = json.loads(message.payload)
        except ValueError:
            payload = None
        with self._lock:
            self.timed.append((now, message.topic, payload))


def set_key(settings: dict[str, Any], key: str, value: Any) -> None:
    """settings[a][b] = value for key 'a.b' (any depth; missing levels made)."""
    *path, last = key.split(".")
    for part in path:
        settings = settings.setdefault(part, {})
    settings[last] = value


def adapted_config(
    name: str, folder: Path, camera_url: str, mqtt_port: int, metrics_port: int, gallery: Path
) -> dict[str, Any]:
    """configs/NAME.yaml with its first camera's settings on the RTSP camera, the broker and
    metrics ports, the paths in ``folder``, the shipped FaceNet model and ``gallery``."""
    settings: dict[str, Any] = yaml.safe_load(CONFIGS[name].read_text())
    camera = {**settings["cameras"][0], "name": CAMERA, "url": camera_url}
    settings["cameras"] = [camera]
    settings["recognition"] = {
        **settings.get("recognition", {}),
        "model": str(MODEL),
        "gallery": str(gallery),
    }
    mqtt = settings.setdefault("mqtt", {})
    for key in ("username", "password", "tls"):
        mqtt.pop(key, None)
    mqtt.update(host="127.0.0.1", port=mqtt_port, spool_dir=str(folder / "spool"))
    settings["metrics"] = {**settings.get("metrics", {}), "port": metrics_port}
    if "archive" in settings:
        settings["archive"]["dir"] = str(folder / "archive")
    settings["events"] = {**settings.get("events", {}), "stdout": False}
    return settings


def make_gallery(folder: Path, stranger: bool) -> Path:
    """configs/demo/people enrolled from their reference photos; without him when
    ``stranger``."""
    gallery = folder / "gallery.sqlite"
    for person in sorted(p.name for p in PEOPLE.iterdir() if p.is_dir()):
        if not (stranger and person == PERSON):
            enroll(MODEL, gallery, person)
    return gallery


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_running(daemon: Daemon) -> bool:
    """True while the daemon runs; its exit (a bad --set) said at once, not at the timeout."""
    if daemon.proc is not None and daemon.proc.poll() is not None:
        raise AssertionError(f"the daemon exited ({daemon.proc.returncode})")
    return True


def start_services(
    args: argparse.Namespace,
    folder: Path,
    running: contextlib.ExitStack,
    clip: tuple[Path, int, int],
    gallery: Path,
) -> tuple[Mosquitto, MarkedRtspServer, dict[str, Any]]:
    """The broker and the marked RTSP server started (each stopped when ``running`` closes),
    and the daemon's settings for them: the config adapted, with --set applied."""
    path, appear, leave = clip
    port = args.port
    broker = Mosquitto(folder, port)
    running.callback(broker.stop)
    broker.start()
    rtsp = MarkedRtspServer(folder, path, {appear: "appear", leave: "leave"}, port and port + 1)
    running.callback(rtsp.stop)
    rtsp.start()
    metrics_port = port + 2 if port else free_port()
    settings = adapted_config(
        args.config, folder, rtsp.url(CAMERA), broker.port, metrics_port, gallery
    )
    for item in args.set:
        key, _, value = item.partition("=")
        set_key(settings, key, yaml.safe_load(value))
    return broker, rtsp, settings


def wait_for_visits(
    args: argparse.Namespace,
    daemon: Daemon,
    rtsp: MarkedRtspServer,
    settings: dict[str, Any],
    loop_s: float,
) -> None:
    """Until --visits leave marks came, then until his last visit's events are in; the
    daemon's log on stderr when it stopped or the wait timed out."""
    timeout = args.visits * loop_s + 120
    try:
        wait_for(
            lambda: (
                daemon_running(daemon)
                and len([m for m in rtsp.marks() if m[0] == "leave"]) >= args.visits
            ),
            timeout,
            f"{args.visits} visits",
            every_s=0.5,
        )
        time.sleep(settings.get("tracking", {}).get("lost_after_s", 2.0) + AFTER_LEAVE_S)
    except AssertionError:
        print(daemon.log()[-3000:], file=sys.stderr)
        raise


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    clip, appear, leave = make_clip()
    gallery = make_gallery(folder, args.stranger)
    with contextlib.ExitStack() as running:  # each part stopped however the run ends
        broker, rtsp, settings = start_services(
            args, folder, running, (clip, appear, leave), gallery
        )
        subscriber = TimedSubscriber(broker.port)
        running.callback(subscriber.close)
        load = os.getloadavg()[0]
        busy, start = machine_busy_s(), time.monotonic()
        daemon = Daemon(folder, settings)
        running.callback(daemon.stop)
        daemon.start()
        pids = {"self": os.getpid()}  # the parts this benchmark runs, for their CPU seconds
        for name, part in (("daemon", daemon), ("rtsp", rtsp), ("broker", broker)):
            assert part.proc is not None
            pids[name] = part.proc.pid
        cpu_before = {name: proc_cpu_s(pid) for name, pid in pids.items()}
        # the clip's length: to his leaving, then the empty stage
        wait_for_visits(args, daemon, rtsp, settings, (leave + appear) / 30)
        ended = time.time()
        cpu = {name: round(proc_cpu_s(pid) - cpu_before[name], 1) for name, pid in pids.items()}
        wall = time.monotonic() - start
        busy_after = machine_busy_s()
        marks, messages = rtsp.marks(), list(subscriber.timed)
    others = others_cores(busy, busy_after, sum(cpu.values()), wall)
    result = analyse(marks, messages, args.stranger, ended)
    result["received"] = received(messages)
    result["marks"] = marks
    machine = {
        "cores": os.cpu_count(),
        "load_1min_before": round(load, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
        "wall_s": round(wall, 1),
        "cpu_s": cpu,
        "others_cores": None if others is None else round(others, 2),
    }
    return {**run_settings(args, settings), **result, "machine": machine}


def run_settings(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """What a run's record says it ran with."""
    return {
        "config": args.config,
        "set": args.set,
        "stranger": args.stranger,
        "fps": settings["cameras"][0].get("fps"),
        "settings": {
            section: settings.get(section)
            for section in ("cameras", "detection", "tracking", "recognition", "batching")
        },
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--config",
        choices=sorted(CONFIGS),
        default="default",
        help="the shipped config whose settings the daemon runs with (configs/NAME.yaml)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting changed from the config, e.g. detection.full_scan_every=1 (repeatable)",
    )
    p.add_argument(
        "--stranger",
        action="store_true",
        help="he is not in the gallery: measure his announcement as unknown, not his naming",
    )
    p.add_argument("--visits", type=int, default=6, help="visits measured (23.9 s each)")
    p.add_argument(
        "--port",
        type=int,
        help="the broker's port, the RTSP server's the next and the metrics' the one after "
        "(free ports when not given)",
    )
    out_argument(p, DEFAULT_OUT.name)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.visits < 1:
        p.error(f"--visits {args.visits}: must be 1 or more")
    for item in args.set:
        if "=" not in item or not item.partition("=")[0]:
            p.error(f"--set {item}: expected KEY=VALUE (KEY as section.name)")
    if not SOURCE.is_file():
        print(f"{SOURCE} not found", file=sys.stderr)
        return 1
    stop_on_sigterm()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
