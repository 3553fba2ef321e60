"""What changed between two configurations, by key path, never the values (SIGHUP's reload
says it: daemon/service_watch.py)."""

from __future__ import annotations

from typing import Any

from daemon.config import Config


def config_changes(old: Config, new: Config) -> list[str]:
    """The key paths whose values differ from ``old`` to ``new`` (``mqtt.host``,
    ``cameras[door].fps``, ``cameras[yard] (added)``), never the values (a password)."""
    before, after = old.model_dump(), new.model_dump()
    changed = _changes(
        {k: v for k, v in before.items() if k != "cameras"},
        {k: v for k, v in after.items() if k != "cameras"},
        "",
    )
    cameras = {c["name"]: c for c in before["cameras"]}
    for camera in after["cameras"]:
        name = camera["name"]
        if name in cameras:
            changed += _changes(cameras.pop(name), camera, f"cameras[{name}]")
        else:
            changed.append(f"cameras[{name}] (added)")
    return changed + [f"cameras[{name}] (removed)" for name in cameras]


def _changes(old: Any, new: Any, where: str) -> list[str]:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [where]
    keys = [*old, *(k for k in new if k not in old)]
    return [
        path for key in keys for path in _changes(old.get(key), new.get(key), _dotted(where, key))
    ]


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
