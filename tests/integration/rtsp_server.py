"""A real RTSP server for the tests and benchmarks: GStreamer's RTSP server (gst-rtsp-server)
serving video files in an endless loop, paced at their native frame rate: H.264, H.265 or
MJPEG in MP4 or QuickTime, the codecs IP cameras stream.

Runs under the system Python, which has GStreamer's introspection bindings:

    /usr/bin/python3 tests/integration/rtsp_server.py --port 8554 cam1=clip.mp4 cam2=other.mp4

serves rtsp://127.0.0.1:8554/cam1 and /cam2. Each file's encoded frames are read once (no
re-encoding: the server costs almost no CPU) and replayed with shifted timestamps, so a
client sees one continuous stream. Prints "ready" on stdout once it listens.
``--no-keyframes`` serves every frame but the keyframes (their SPS and PPS stay): an H.264
camera that answers and streams, but whose stream never decodes. ``--audio`` adds a second
track, a tone in G.711 A-law, as cameras with their microphone on send. ``--tls CERT,KEY``
serves rtsps:// (RTSP over TLS) with that certificate.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

# each codec's frames as read from the file (whole frames; H.264 and H.265 as Annex B byte
# stream with their parameter sets inline), and as sent (RTP payload types: 96 dynamic, 26 JPEG)
CODECS = {
    "video/x-h264": (
        "h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au",
        "h264parse ! rtph264pay name=pay0 pt=96 config-interval=1",
    ),
    "video/x-h265": (
        "h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream,alignment=au",
        "h265parse ! rtph265pay name=pay0 pt=96 config-interval=1",
    ),
    "image/jpeg": ("jpegparse", "jpegparse ! rtpjpegpay name=pay0 pt=26"),
}


@dataclass
class Clip:
    codec: str  # a key of CODECS
    caps: Gst.Caps
    units: list[tuple[bytes, int, int, int, bool]]  # data, pts, dts, duration (ns), delta
    length_ns: int


def _first_caps(launch: str) -> Gst.Caps | None:
    """The caps of the first buffer that ``launch`` (a pipeline without its sink) gives."""
    pipeline = Gst.parse_launch(f"{launch} ! appsink name=sink sync=false")
    pipeline.set_state(Gst.State.PLAYING)
    sample = pipeline.get_by_name("sink").emit("pull-sample")
    pipeline.set_state(Gst.State.NULL)
    return None if sample is None else sample.get_caps()


def read_clip(path: str) -> Clip:
    """Every frame (access unit) of the video track of an MP4 or QuickTime file."""
    caps = _first_caps(f'filesrc location="{path}" ! qtdemux')
    codec = caps.get_structure(0).get_name() if caps is not None else None
    if codec not in CODECS:
        raise SystemExit(f"{path}: no H.264, H.265 or MJPEG video found ({codec})")
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! qtdemux ! {CODECS[codec][0]} ! appsink name=sink sync=false'
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units, caps = [], None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buf = sample.get_buffer()
        delta = bool(buf.get_flags() & Gst.BufferFlags.DELTA_UNIT)
        data = buf.extract_dup(0, buf.get_size())
        units.append((data, buf.pts, buf.dts, buf.duration, delta))
    pipeline.set_state(Gst.State.NULL)
    if not units or caps is None:
        raise SystemExit(f"{path}: no frame of its {codec} video read")
    last = units[-1]
    length = max(u[1] for u in units) + (last[3] if last[3] != Gst.CLOCK_TIME_NONE else 0)
    return Clip(codec, caps, units, length)


def without_keyframes(clip: Clip) -> Clip:
    """The clip with its IDR slices (NAL unit type 5) taken out; the SPS, PPS and SEI units
    of a keyframe's access unit stay, and every other frame is as it was. (H.264 only.)"""
    if clip.codec != "video/x-h264":
        raise SystemExit(f"--no-keyframes serves H.264 clips only, not {clip.codec}")
    units = []
    for data, pts, dts, duration, delta in clip.units:
        if not delta:
            starts = [m.start() for m in re.finditer(b"\x00\x00\x01", data)]
            ends = [*starts[1:], len(data)]
            data = b"".join(
                data[a:b] for a, b in zip(starts, ends, strict=True) if data[a + 3] & 0x1F != 5
            )
        units.append((data, pts, dts, duration, delta))
    return Clip(clip.codec, clip.caps, units, clip.length_ns)


def feed(appsrc: Gst.Element, clip: Clip, stop: threading.Event) -> None:
    """Push the clip's units forever, paced by the wall clock."""
    started = time.monotonic()
    loop = 0
    while not stop.is_set():
        offset = loop * clip.length_ns
        for data, pts, dts, duration, delta in clip.units:
            when = started + (offset + pts) / 1e9
            time.sleep(max(0.0, when - time.monotonic() - 0.005))
            buf = Gst.Buffer.new_wrapped(data)
            buf.pts = offset + pts
            buf.dts = offset + dts if dts != Gst.CLOCK_TIME_NONE else Gst.CLOCK_TIME_NONE
            buf.duration = duration
            if delta:
                buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
            if appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                return  # the media was torn down
        loop += 1


# a camera's microphone: G.711 A-law (PCMA), what most cameras send when their audio is on
AUDIO = "audiotestsrc is-live=true ! audioconvert ! audioresample ! alawenc ! rtppcmapay name=pay1"


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, clip: Clip, audio: bool) -> None:
        super().__init__()
        self.clip = clip
        sent = CODECS[clip.codec][1]
        video = f"appsrc name=src is-live=true format=time do-timestamp=false ! {sent}"
        self.set_launch(f"( {video} {AUDIO if audio else ''} )")
        self.set_shared(True)
        self.connect("media-configure", self._configure)

    def _configure(
        self, factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia
    ) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        appsrc.set_property("caps", self.clip.caps)
        stop = threading.Event()
        media.connect("unprepared", lambda *_: stop.set())
        threading.Thread(target=feed, args=(appsrc, self.clip, stop), daemon=True).start()


def access(user: str | None, tls: str | None) -> GstRtspServer.RTSPAuth | None:
    """Who may watch, and how: only USER with PASSWORD (``user``, RTSP Digest
    authentication) or anyone; over TLS (rtsps) with the CERT,KEY files of ``tls``. None
    (plain RTSP, anyone) without either."""
    if user is None and tls is None:
        return None
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    if user is not None:
        name, password = user.split(":", 1)
        auth.add_digest(name, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    else:
        auth.set_default_token(token)
    if tls is not None:
        certificate, key = tls.split(",", 1)
        auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(certificate, key))
    return auth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument(
        "--user", metavar="NAME:PASSWORD", help="ask for this user (Digest), as cameras do"
    )
    parser.add_argument(
        "--no-keyframes", action="store_true", help="serve the clips without their keyframes"
    )
    parser.add_argument(
        "--audio", action="store_true", help="an audio track beside the video, as cameras send"
    )
    parser.add_argument("--tls", metavar="CERT,KEY", help="serve rtsps:// with these files")
    parser.add_argument("mounts", nargs="+", metavar="NAME=FILE.mp4")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    auth = access(args.user, args.tls)
    if auth is not None:
        server.set_auth(auth)
    points = server.get_mount_points()
    for spec in args.mounts:
        name, _, path = spec.partition("=")
        clip = read_clip(path)
        factory = LoopingFactory(without_keyframes(clip) if args.no_keyframes else clip, args.audio)
        if auth is not None:
            viewer = (
                "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )
            factory.add_role_from_structure(Gst.Structure.from_string(viewer)[0])
        points.add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.address}:{args.port}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
