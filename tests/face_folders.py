"""Tiny folder-per-identity datasets of real CelebA photos (../shared/data/celeba), linked;
and a person's folder as it comes off other systems (``messy_folder``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_celeba = pytest.mark.skipif(
    not (SHARED / "celeba").is_dir(), reason=f"shared data not found at {SHARED}"
)
needs_shared = pytest.mark.skipif(
    not (SHARED / "lfw").is_dir(), reason=f"shared data not found at {SHARED}"
)


def celeba_people(root: Path, counts: list[int]) -> Path:
    """``root/<identity>/<photo>``: one CelebA identity per count, with that many photos."""
    people = sorted(p for p in (SHARED / "celeba").iterdir() if p.is_dir())
    for person, count in zip(people, counts, strict=False):
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:count]:
            (root / person.name / photo.name).symlink_to(photo)
    return root


def tiny_checkpoint(path: Path, lfw: dict | None = None) -> Path:
    """A zero-epoch checkpoint of an untrained Inception-ResNet-v1 (80 px in, 16-d out)."""
    import torch

    from training.checkpoint import Checkpoint
    from training.facenet_nets import build_model

    torch.manual_seed(0)
    options = {"model_def": "inception_resnet_v1", "embedding_size": 16, "image_size": 80,
               "standardization": "fixed", "loss": "triplet"}  # fmt: skip
    extra = {"alignment": "margin", "margin": 16, **({"lfw": lfw} if lfw else {})}
    Checkpoint(build_model("inception_resnet_v1", 16).eval().state_dict(), None, None, 0, 0,
               options, extra).save(path)  # fmt: skip
    return path


def lfw_pairs(path: Path, header: str, by_fold: bool = True) -> Path:
    """20 pairs of the real LFW pairs.txt: two folds of 5 same + 5 different pairs (as
    pairs.txt is written), or with ``by_fold`` False the 10 same ones first."""
    lines = (SHARED / "lfw" / "pairs.txt").read_text().splitlines()
    same, different = lines[1:11], lines[301:311]
    body = same[:5] + different[:5] + same[5:] + different[5:] if by_fold else same + different
    path.write_text(header + "\n" + "\n".join(body) + "\n")
    return path


def messy_folder(images: Path, root: Path) -> Path:
    """A person's folder as it comes off a Mac, a Windows download, a NAS and an iPhone."""
    person = root / "Obama"
    (person / "@eaDir" / "a.jpg").mkdir(parents=True)  # a Synology NAS's thumbnails
    (person / ".thumbnails").mkdir()
    shutil.copy(images / "obama-240p.jpg", person / "a.jpg")
    shutil.copy(images / "obama2.jpg", person / "download.jfif")  # Chrome/Edge on Windows
    shutil.copy(images / "biden.jpg", person / "@eaDir" / "a.jpg" / "SYNOPHOTO_THUMB_M.jpg")
    shutil.copy(images / "biden.jpg", person / ".thumbnails" / "cache.jpg")
    (person / "._a.jpg").write_bytes(b"\x00\x05\x16\x07Mac OS X" + bytes(4000))  # AppleDouble
    (person / "IMG_0044.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(500))
    (person / "Thumbs.db").write_bytes(bytes(100))
    (person / "notes.txt").write_text("where these were taken\n")
    album = root / "shared_album"
    album.mkdir()
    shutil.copy(images / "obama3.jpg", album / "x.jpg")
    (person / "album").symlink_to(album)  # a symlinked folder: walked
    (album / "loop").symlink_to(root)  # a link back up the tree: walked once
    return person
