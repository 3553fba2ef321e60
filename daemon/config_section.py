"""What every section of the daemon's configuration schema is: a frozen pydantic model that
refuses unknown keys, whose fields each have a default and a one-line description."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field(default: Any, description: str, **bounds: Any) -> Any:
    return Field(default=default, description=description, **bounds)
