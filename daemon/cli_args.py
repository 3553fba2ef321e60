"""argparse types the facewatch commands share: a bad value is refused before anything runs,
in one wording (``argument --batch: must be >= 1, got 0``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from engines.base import bounds_text, within

N = TypeVar("N", int, float)


def number(kind: Callable[[str], N], **bounds: float) -> Callable[[str], N]:
    """An argparse type: a finite ``kind`` (int or float) within ``bounds``, in pydantic's
    words (``ge=1``; ``gt=0, lt=1``), as the daemon's config and ``engines.mtcnn`` give
    theirs."""
    what = "an integer" if kind is int else "a finite number"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if not within(value, bounds):
            raise argparse.ArgumentTypeError(f"must be {bounds_text(bounds)}, got {text}")
        return value

    return parse
