"""What a configuration's errors say (the class, ``ConfigError``, is daemon/config.py's): each
validation error by its key path, with the camera's name (``key_path``: ``cameras[1]
(door).fps``), and in words (``explain``): an unknown key's likely meaning (a close key, or a
per-camera one set at the top), the value given (a secret's masked or left out).
"""

from __future__ import annotations

import difflib
from typing import Any

from daemon.config import Config
from daemon.config_cameras import CameraConfig
from daemon.config_section import Section, section_in
from daemon.redaction import redact_url


def key_path(loc: tuple[int | str, ...], raw: Any) -> str:
    """``('cameras', 1, 'fps')`` -> ``cameras[1] (door).fps``."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] = f"{parts[-1]}[{item}]"
            else:  # a number as a top-level key
                parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                parts[-1] += f" ({node['name']})"
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def explain(error: dict[str, Any]) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        if loc[0] != "cameras" and str(loc[-1]) in _keys_beside(loc, CameraConfig):
            where = ".".join(str(part) for part in loc)
            return f"unknown key here: it is set per camera, as cameras[].{where}"
        close = difflib.get_close_matches(str(loc[-1]), _keys_beside(loc), n=1)
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    if kind == "missing":
        if loc and isinstance(loc[-1], int):  # an item of a fixed-length list
            return f"too few values: the list needs {loc[-1] + 1} or more"
        return "required key is missing"
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        bound = "at least" if kind == "too_short" else "at most"
        return f"expected {bound} {limit} item(s), got {ctx.get('actual_length')}"
    got = error.get("input")
    secret = any("password" in str(part) for part in error["loc"])
    written = repr(redact_url(got)) if isinstance(got, str) else redact_url(repr(got))
    shown = "" if secret or isinstance(got, (dict, list)) else f" (got {written})"
    message = str(error["msg"]).removeprefix("Value error, ")  # pydantic's, for our checks
    if kind in ("list_type", "tuple_type"):
        message = "expected a list of values ([a, b, ...])"
    if error["type"] == "model_type":  # "...or instance of MotionConfig": a class's name
        message = "expected a section of settings (key: value lines under it)"
        if error["loc"] and error["loc"][-1] == "motion":
            message += ", or true / false"
    return f"{message}{shown}"


def _keys_beside(loc: tuple[int | str, ...], root: type[Section] = Config) -> list[str]:
    """The keys of the section that holds ``loc``'s last key (for "did you mean"), with
    ``loc`` read from ``root``."""
    section: type[Section] | None = root
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        field = section.model_fields.get(item) if section is not None else None
        section = section_in(field.annotation) if field is not None else None
    return list(section.model_fields) if section is not None else []
