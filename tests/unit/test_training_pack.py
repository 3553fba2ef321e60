"""training/pack.py: crops re-encoded into tar parts no larger than a device call carries."""

from __future__ import annotations

import tarfile

import cv2
import numpy as np
import pytest

from training.pack import MANIFEST, main, pack


@pytest.fixture
def crops(shared_data, tmp_path):
    """Three identities of real LFW photos (JPEG quality 95), as aligned crops look."""
    root = tmp_path / "crops"
    people = sorted((shared_data / "lfw" / "images").glob("*"))[:200]
    people = [p for p in people if len(list(p.glob("*.jpg"))) >= 8][:3]
    for person in people:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:8]:
            cv2.imwrite(
                str(root / person.name / photo.name),
                cv2.imread(str(photo)),
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
    return root


def test_every_crop_lands_once_in_parts_under_the_limit(crops, tmp_path) -> None:
    names = sorted(p.relative_to(crops).as_posix() for p in crops.glob("*/*.jpg"))
    left_out = names[0].split("/")[0]
    out = tmp_path / "parts"
    rows = pack(crops, out, quality=60, part_bytes=64 * 1024, exclude={left_out})
    assert len(rows) >= 2, "small parts: the crops need several"
    manifest = [line.split() for line in (out / MANIFEST).read_text().splitlines()]
    assert [(name, int(count), int(size)) for name, count, size in manifest] == rows
    packed = []
    for name, count, size in rows:
        assert (out / name).stat().st_size == size <= 64 * 1024
        with tarfile.open(out / name) as tar:
            members = tar.getmembers()
            assert len(members) == count
            for member in members:
                data = np.frombuffer(tar.extractfile(member).read(), np.uint8)
                image = cv2.imdecode(data, cv2.IMREAD_COLOR)
                original = cv2.imread(str(crops / member.name.removeprefix("crops/")))
                assert image.shape == original.shape
                assert np.abs(image.astype(int) - original).mean() < 6, "re-encoded, same picture"
                assert len(data) < (crops / member.name.removeprefix("crops/")).stat().st_size
                packed.append(member.name.removeprefix("crops/"))
    assert sorted(packed) == [n for n in names if not n.startswith(left_out + "/")]


def test_bad_inputs_are_named(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "empty: no <identity>/<file>.jpg crops to pack" in capsys.readouterr().err
    assert main([str(tmp_path / "empty"), str(tmp_path / "out"), "--quality", "0"]) == 2
    assert "--quality 0: must be in 1..100" in capsys.readouterr().err
    assert not (tmp_path / "out" / MANIFEST).exists()
