"""Tiny folder-per-identity datasets of real CelebA photos (../shared/data/celeba), linked."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_celeba = pytest.mark.skipif(
    not (SHARED / "celeba").is_dir(), reason=f"shared data not found at {SHARED}"
)


def celeba_people(root: Path, counts: list[int]) -> Path:
    """``root/<identity>/<photo>``: one CelebA identity per count, with that many photos."""
    people = sorted(p for p in (SHARED / "celeba").iterdir() if p.is_dir())
    for person, count in zip(people, counts, strict=False):
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:count]:
            (root / person.name / photo.name).symlink_to(photo)
    return root
