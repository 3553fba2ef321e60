"""`validate-config --schema`: every setting of the configuration, one line each (its key
path, default, the values it accepts, and description), read from the schema itself."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel

from daemon.config import Config
from daemon.config_section import section_in


def schema_lines(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """One line per setting: key path, default and description (for --schema)."""
    lines = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        section = section_in(info.annotation)
        if section is not None:
            lines.append(f"{key}: {info.description}")
            item = "[]." if name == "cameras" else "."
            lines += schema_lines(section, key + item)
            continue
        default = "required" if info.is_required() else f"default {_yaml(info.default)}"
        lines.append(f"{key} ({default}{_allowed(info)}): {info.description}")
    return lines


def _yaml(value: Any) -> str:
    """A default as it is written in the YAML file (null, true, [0.6, 0.7, 0.7])."""
    if isinstance(value, tuple):
        value = list(value)
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _allowed(info: Any) -> str:
    """'; one of a, b' for a choice, '; >= 1, <= 60' for a bounded number."""
    choices = [
        a for a in getattr(info.annotation, "__args__", ()) if isinstance(a, str | int | float)
    ]
    if choices and getattr(info.annotation, "__origin__", None) is Literal:
        return "; one of " + ", ".join(str(c) for c in choices)
    bounds = []
    for rule in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(rule, attr, None) is not None:
                bounds.append(f"{sign} {getattr(rule, attr)}")
    return "; " + ", ".join(bounds) if bounds else ""
