"""What decoding a camera's stream costs the box, by codec and size: H.264, H.265 and MJPEG,
the codecs IP cameras send, at 360p, 720p, 1080p and 4K.

The daemon decodes every frame a camera sends (to keep the few it searches), so this cost is
paid per camera at the stream's own frame rate, before any face is looked for. Each clip
(the shared crowd_1080p video, and head_turn_3456x2234 for 4K) is encoded once per codec and
size with GStreamer, at the bitrates cameras use by default (``BITRATES``; MJPEG at quality
85) with a keyframe a second, then decoded ``--repeat`` times through the daemon's own
``open_capture`` (OpenCV's FFmpeg, the daemon's decoder threads). Reported per clip: decoded
frames a second, and CPU milliseconds a frame (this process, FFmpeg's threads included):
with cores C, a box decodes about C * 1000 / ms frames a second in all, shared by its
cameras. Run from the repository root, on an otherwise idle machine:

    .venv/bin/python bench/bench_decode.py --out bench/results/decode_cpu.json

Writes --out (by default bench/.cache/decode.json) and prints a table. It measures; it
asserts nothing. Needs gst-launch-1.0 with x264enc, x265enc and jpegenc (.ci/system-packages).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from measure import cpu_s  # noqa: E402
from script_support import CACHE, out_argument  # noqa: E402

from daemon.camera_open import decoder_threads, open_capture  # noqa: E402
from tests.clips import ENCODERS  # noqa: E402

VIDEOS = REPO.parent / "shared" / "data" / "videos"
# name: (source video, width, height)
SIZES = {
    "360p": ("crowd_1080p.mp4", 640, 360),
    "720p": ("crowd_1080p.mp4", 1280, 720),
    "1080p": ("crowd_1080p.mp4", 1920, 1080),
    "4K": ("head_turn_3456x2234.mp4", 3456, 2234),
}
# kbit/s, as cameras ship (main streams; H.265 at about half H.264's for the same picture)
BITRATES = {
    "360p": {"h264": 512, "h265": 256},
    "720p": {"h264": 2048, "h265": 1024},
    "1080p": {"h264": 4096, "h265": 2048},
    "4K": {"h264": 8192, "h265": 4096},
}
FPS = 25
DEFAULT_OUT = CACHE / "decode.json"  # not bench/results/: keeps the committed one


def encoded(size: str, codec: str) -> Path:
    """The size's clip as ``codec``, made once under bench/.cache/."""
    source, width, height = SIZES[size]
    out = (
        CACHE / f"decode_{Path(source).stem}_{size}_{codec}.{'mov' if codec == 'mjpeg' else 'mp4'}"
    )
    if out.is_file():
        return out
    encoder, _package, tail = ENCODERS[codec]
    if codec == "mjpeg":
        encoder += " quality=85"
    else:  # no B-frames, as cameras send
        bframes = "bframes=0" if codec == "h264" else "option-string=bframes=0"
        encoder += (
            f" bitrate={BITRATES[size][codec]} speed-preset=medium key-int-max={FPS} {bframes}"
        )
    pipeline = (
        f"filesrc location={VIDEOS / source} ! decodebin ! videoconvert ! videoscale "
        f"! videorate ! video/x-raw,format=I420,width={width},height={height},framerate={FPS}/1 "
        f"! {encoder} ! {tail} ! filesink location={out}.part"
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], check=True)
    Path(f"{out}.part").rename(out)
    return out


def decode(path: Path) -> tuple[int, float, float]:
    """Every frame of ``path`` read as a camera reader reads: frames, seconds, CPU seconds."""
    capture = open_capture(str(path))
    frames = 0
    started, cpu = time.perf_counter(), cpu_s()
    while capture.read()[0]:
        frames += 1
    seconds, cpu = time.perf_counter() - started, cpu_s() - cpu
    capture.release()
    return frames, seconds, cpu


def measure(size: str, codec: str, repeat: int) -> dict[str, Any]:
    path = encoded(size, codec)
    decode(path)  # warm-up (the file cached, the decoder's libraries loaded)
    runs = [decode(path) for _ in range(repeat)]
    frames = runs[0][0]
    duration = frames / FPS
    return {
        "size": size,
        "codec": codec,
        "frames": frames,
        "kbit_per_s": round(path.stat().st_size * 8 / 1000 / duration),
        "frames_per_s": round(statistics.median(frames / s for _, s, _ in runs), 1),
        "cpu_ms_per_frame": round(statistics.median(c / frames * 1000 for _, _, c in runs), 2),
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes", nargs="+", choices=list(SIZES), default=list(SIZES), help="frame sizes"
    )
    parser.add_argument(
        "--codecs", nargs="+", choices=list(ENCODERS), default=list(ENCODERS), help="codecs"
    )
    parser.add_argument("--repeat", type=int, default=5, help="decodes of each clip measured")
    out_argument(parser, DEFAULT_OUT.name)
    return parser


def main() -> None:
    args = parser().parse_args()
    for source, *_ in SIZES.values():
        if not (VIDEOS / source).is_file():
            raise SystemExit(f"{VIDEOS / source}: not found (the shared data's videos)")
    load = os.getloadavg()[0]
    print(f"{'size':6} {'codec':6} {'kbit/s':>7} {'frames/s':>9} {'CPU ms/frame':>13}")
    rows = []
    for size in args.sizes:
        for codec in args.codecs:
            row = measure(size, codec, args.repeat)
            rows.append(row)
            print(
                f"{size:6} {codec:6} {row['kbit_per_s']:7} {row['frames_per_s']:9} "
                f"{row['cpu_ms_per_frame']:13}",
                flush=True,
            )
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "decoder_threads": decoder_threads(),
            "load_1min_before": load,
        },
        "fps": FPS,
        "repeat": args.repeat,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
