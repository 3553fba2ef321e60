"""What every section of the daemon's configuration schema is: a frozen pydantic model that
refuses unknown keys, whose fields each have a default and a one-line description."""

from __future__ import annotations

from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field(default: Any, description: str, **bounds: Any) -> Any:
    return Field(default=default, description=description, **bounds)


def section_in(annotation: Any) -> type[Section] | None:
    """The Section class a field holds (directly, in a list, or optional), if any."""
    # get_origin: Python 3.10 calls list[CameraConfig] a type, and issubclass then raises
    if isinstance(annotation, type) and get_origin(annotation) is None:
        return annotation if issubclass(annotation, Section) else None
    for inner in get_args(annotation):
        found = section_in(inner)
        if found is not None:
            return found
    return None
