"""The configuration's cameras (``cameras:``) and the ``detection`` section they override:
the motion gate, MTCNN's settings, the regions whose faces are dropped, a camera's own
recognition settings, and the checks of a camera's name and URL."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import Field, field_validator

from daemon.config_section import Section, _field
from engines.base import bounds_text, within
from engines.boxes import polygon_area, polygon_crosses_itself
from engines.mtcnn import (
    MIN_FACE_SIZE_BOUNDS,
    SCALE_FACTOR_BOUNDS,
    THRESHOLD_BOUNDS,
    MTCNNConfig,
)

STREAM_SCHEMES = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "file"}
)


def _switch(value: Any) -> Any:
    """``motion: false`` for ``motion: {enabled: false}`` (and true for on)."""
    return {"enabled": value} if isinstance(value, bool) else value


class MotionConfig(Section):
    enabled: bool = _field(
        True,
        "skip the detector on a camera's frames where nothing moved while it sees no face "
        "(most of a quiet camera's frames: a fraction of the CPU)",
    )
    min_change_levels: float = _field(
        15.0,
        "grey levels (of 255) a pixel must change by to count as changed, on a 320 px wide "
        "blurred copy of the frame",
        gt=0,
        lt=255,
    )
    min_area_fraction: float = _field(
        0.002, "fraction of the frame that must change for a frame to count as moved", ge=0, lt=1
    )
    check_every_s: float = _field(
        10.0,
        "search a still frame anyway at least this often (someone who stands still: in view "
        "when the daemon or camera started)",
        gt=0,
        le=3600,
    )


class MotionOverrides(Section):
    enabled: bool | None = _field(None, "this camera's motion.enabled; null = detection.motion's")
    min_change_levels: float | None = _field(
        None, "this camera's motion.min_change_levels", gt=0, lt=255
    )
    min_area_fraction: float | None = _field(
        None, "this camera's motion.min_area_fraction", ge=0, lt=1
    )
    check_every_s: float | None = _field(None, "this camera's motion.check_every_s", gt=0, le=3600)


class DetectionConfig(Section):
    """MTCNN's settings: their defaults and bounds are the detector's (``engines.mtcnn``)."""

    min_face_size: float = _field(
        MTCNNConfig.min_face_size, "smallest face to find, in pixels", **MIN_FACE_SIZE_BOUNDS
    )
    thresholds: tuple[float, float, float] = _field(
        MTCNNConfig.thresholds, "P-Net, R-Net, O-Net score thresholds, each in (0, 1)"
    )
    scale_factor: float = _field(
        MTCNNConfig.scale_factor, "image pyramid step", **SCALE_FACTOR_BOUNDS
    )
    full_scan_every: int = _field(
        1,
        "search each camera's whole frame every N frames, and in between only around the "
        "faces it tracks (N > 1: a fraction of the CPU; another face found up to N-1 frames "
        "later); a camera that tracks no one has the first N frames that moved after a still "
        "one searched whole (someone coming in is found at once), then, while its view moves "
        "on, every Nth; without the motion gate, every Nth frame only (someone coming in "
        "found up to N-1 frames later)",
        ge=1,
        le=100,
    )
    motion: MotionConfig = _field(
        MotionConfig(),
        "the motion gate: still frames of a camera with no face in view (true / false: on or "
        "off with the other settings' defaults)",
    )
    _motion_switch = field_validator("motion", mode="before")(_switch)

    @field_validator("thresholds")
    @classmethod
    def _in_unit_interval(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(within(t, THRESHOLD_BOUNDS) for t in value):
            raise ValueError(
                f"each threshold must be {bounds_text(THRESHOLD_BOUNDS)}, got {list(value)}"
            )
        return value


IGNORE_SHAPE = (
    "expected a list of regions, each a list of [x, y] corners, e.g. "
    "[[[0.7, 0.05], [0.95, 0.05], [0.95, 0.4], [0.7, 0.4]]]"
)


class DetectionOverrides(Section):
    min_face_size: float | None = _field(
        None, "this camera's smallest face", **MIN_FACE_SIZE_BOUNDS
    )
    motion: MotionOverrides = _field(
        MotionOverrides(),
        "this camera's motion gate settings (those not given: detection's; true / false: on "
        "or off)",
    )
    _motion_switch = field_validator("motion", mode="before")(_switch)
    ignore: list[list[tuple[float, float]]] = _field(
        [],
        "regions whose faces are dropped (a poster, a TV, a mirror): polygons of 3 or more "
        "[x, y] corners, each 0..1 of the frame's width and height; a face is dropped when the "
        "centre of its box (of the part inside the frame) lies inside one",
    )

    @field_validator("ignore", mode="before")
    @classmethod
    def _shape(cls, regions: Any) -> Any:
        def number(value: Any) -> bool:
            if isinstance(value, str):  # e.g. from ${VAR}: pydantic converts it
                try:
                    float(value)
                except ValueError:
                    return False
                return True
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        def corner(value: Any) -> bool:
            return isinstance(value, (list, tuple)) and len(value) == 2 and all(map(number, value))

        def region(value: Any) -> bool:
            return isinstance(value, (list, tuple)) and all(corner(c) for c in value)

        if not (isinstance(regions, (list, tuple)) and all(region(r) for r in regions)):
            raise ValueError(IGNORE_SHAPE)
        return regions

    @field_validator("ignore")
    @classmethod
    def _polygons(
        cls, polygons: list[list[tuple[float, float]]]
    ) -> list[list[tuple[float, float]]]:
        for k, polygon in enumerate(polygons):
            if len(polygon) < 3:
                raise ValueError(
                    f"region {k}: expected 3 or more [x, y] corners, got {len(polygon)}"
                )
            outside = [list(p) for p in polygon if not all(0.0 <= v <= 1.0 for v in p)]
            if outside:
                raise ValueError(
                    f"region {k}: corners are fractions of the frame's width and height (0..1: "
                    f"x in pixels / width, y / height), got {outside[0]}"
                )
            if polygon_crosses_itself(np.array(polygon)):
                raise ValueError(
                    f"region {k}: its edges cross: list the corners in order around it"
                )
            if polygon_area(np.array(polygon)) < 1e-6:
                raise ValueError(f"region {k}: encloses no area")
        return polygons


class RecognitionOverrides(Section):
    min_face_px: float | None = _field(
        None, "this camera's smallest face recognised", ge=0, le=10000
    )
    threshold: float | None = _field(
        None,
        "this camera's distance threshold, in place of recognition.threshold (or the "
        "gallery's): lower it for a night, blurred or low-bitrate camera, whose poor faces "
        "are named as the wrong person more often; a person's own threshold (`gallery "
        "threshold NAME`) still holds where it is stricter",
        gt=0,
        le=4,
    )


def _a_name(name: str) -> str:
    """A camera name or node_id: it goes into MQTT topics, metric labels, folder names and
    command lines (a name starting with '-' reads as an option there; '_' was allowed first
    before, and stays)."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}", name) is None or not re.search(
        r"[A-Za-z0-9]", name
    ):
        raise ValueError(
            "letters, digits, '_' and '-' only, not starting with '-', with a letter or digit, "
            "1 to 64 of them (it goes into MQTT topics, metric labels and command lines)"
        )
    return name


def _camera_key(name: str) -> str:
    """What Home Assistant makes of a camera name in its entity ids (``front-door`` and
    ``Front_Door`` are both ``front_door``), and a case-insensitive disk of its folder."""
    return name.lower().replace("-", "_")


IPV6_IN_BRACKETS = "an IPv6 address is written in brackets, the port after them: "


def bare_ipv6(text: str) -> bool:
    """Whether ``text`` (a URL's host and port) is an IPv6 address without its brackets,
    alone or with a ``:PORT`` after it (fd00::10, fd00::5:554, ::1:9708); not a host or an
    IPv4 address with one ':' too many (192.168.1.5:554:554)."""
    if "[" in text or text.count(":") < 2:
        return False
    for address in (text, text.rpartition(":")[0]):
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            continue
        return True
    return False


class CameraConfig(Section):
    name: str = Field(
        description="camera name: letters, digits, _ and - (1 to 64), not starting with -, with "
        "a letter or digit, told apart from the others by more than case or - against _; used in topics, "
        "metrics, logs, folder names and Home Assistant's entity ids",
    )
    _name = field_validator("name")(_a_name)
    url: str = Field(
        description="rtsp://... URL (H.264, H.265 or MJPEG), http://... (MJPEG), rtsps:// or "
        "https:// (the certificate checked against this host's CA certificates), a video "
        "file, or a V4L2 device (/dev/videoN)"
    )
    fps: float = _field(5.0, "frames per second to process (the stream is decimated)", gt=0, le=60)
    enabled: bool = _field(True, "read this camera")
    rotate: Literal[0, 90, 180, 270] = _field(
        0,
        "turn each frame clockwise by this many degrees, for a camera mounted sideways or "
        "upside down (MTCNN and FaceNet find and name upright faces only); everything after "
        "refers to the turned frame: detection.ignore regions, boxes in events, snapshots, "
        "the face archive (the camera's own rotation or corridor mode, where it has one, "
        "costs no CPU here)",
    )
    brighten_dark: bool = _field(
        True,
        "lift the levels of a dark frame (its brightest 1 % under grey 80 of 255: a night "
        "camera short of gain) before detection, which finds most of its faces again; a lit "
        "person in it keeps their contrast, and a brighter frame is left exactly as it is",
    )
    detection: DetectionOverrides = _field(DetectionOverrides(), "per-camera detection settings")
    recognition: RecognitionOverrides = _field(
        RecognitionOverrides(), "per-camera recognition settings"
    )

    @field_validator("rotate", mode="before")
    @classmethod
    def _degrees(cls, value: object) -> object:
        """``${ROTATE}`` gives a string, as it does for fps: "90" is 90."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.strip():
            raise ValueError("empty: expected an rtsp://... URL, a video file or /dev/videoN")
        scheme, found, _ = url.partition("://")
        if not found:
            # a camera's address without its scheme (192.168.1.50:554/stream, cam.lan:554/1)
            if bare_ipv6(url.split("/", 1)[0]):  # fd00::5:554/stream
                raise ValueError(f"no scheme, and {IPV6_IN_BRACKETS}rtsp://[fd00::10]:554/PATH")
            if (
                re.fullmatch(r"[A-Za-z0-9.\-]+:[0-9]+(/.*)?", url)
                or re.fullmatch(r"[0-9]+(\.[0-9]+){3}(/.*)?", url)
                or re.fullmatch(r"\[[0-9A-Fa-f:.]+(%[\w.-]+)?\](:[0-9]+)?(/.*)?", url)
            ):
                raise ValueError(f"no scheme: did you mean rtsp://{url} ?")
            return url
        if scheme.lower() not in STREAM_SCHEMES:
            raise ValueError(
                f"unknown scheme {scheme + '://'!r}: expected one of "
                f"{', '.join(s + '://' for s in sorted(STREAM_SCHEMES))}, a video file or /dev/videoN"
            )
        encode = "a password holding / ? # must be written percent-encoded (%2F %3F %23)"
        if "#" in url:
            raise ValueError(f"a '#' in a camera URL ends it there: {encode}")
        try:
            urlsplit(url).port  # noqa: B018  (parsing it is the check)
        except ValueError as exc:  # a bracket left open, a port that is no number
            rest = url.partition("://")[2]
            netloc = rest.split("/", 1)[0]
            # (an @ after the first / only: a password holding a /, where the host is unknown)
            host = netloc.rpartition("@")[2] if "@" in netloc or "@" not in rest else ""
            if bare_ipv6(host):  # rtsp://fd00::10:554/1
                raise ValueError(f"{IPV6_IN_BRACKETS}{scheme}://[fd00::10]:554/PATH") from None
            why = "no port number after the host's ':'" if "Port" in str(exc) else str(exc)
            raise ValueError(f"cannot be read as a URL ({why}): {encode}") from None
        return url
