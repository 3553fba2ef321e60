"""Pack aligned training crops into tar parts small enough for the GPU machine's calls.

The device machine gets at most 64 MiB a call (the working tree and the carried files
together), and keeps the files of earlier calls while it stays warm. So ``gpu_job.sh
prepare`` re-encodes the crops (JPEG at ``quality``: a 182 px crop is ~4.5 KB at 60, twice
that at 90) into ``train.NN.tar`` files of at most ``part_bytes`` each, one per call, and
writes ``parts.txt`` (one line per part: name, crops, bytes) so that the training call can
tell whether every part arrived.

    python -m training.pack CROPS OUT_DIR [--quality 60] [--part-mib 52] [--exclude ID ...]
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tarfile
from pathlib import Path

import cv2
from tqdm import tqdm

logger = logging.getLogger(__name__)

MANIFEST = "parts.txt"
BLOCK = tarfile.BLOCKSIZE  # a member is a header block plus its data in whole blocks
MIN_PART_BYTES = 64 * 1024  # a member's header and padding, at most


def _encode(path: Path, quality: int) -> bytes:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"{path}: could not be encoded as JPEG")
    return data.tobytes()


def crops_of(root: Path, exclude: set[str]) -> list[Path]:
    """``<identity>/<file>.jpg`` under ``root`` (identity folders may be links), sorted, but
    the identities in ``exclude``."""
    found = sorted(p for p in root.glob("*/*.jpg") if p.parent.name not in exclude)
    if not found:
        raise ValueError(f"{root}: no <identity>/<file>.jpg crops to pack")
    return found


class _Parts:
    """Writes members into ``train.NN.tar`` files, starting a new one before a member would
    take the current one past ``part_bytes``."""

    def __init__(self, out_dir: Path, part_bytes: int) -> None:
        self.out_dir, self.part_bytes = out_dir, part_bytes
        self.rows: list[tuple[str, int, int]] = []
        self._tar: tarfile.TarFile | None = None
        self._count = self._size = 0

    def add(self, name: str, data: bytes) -> None:
        grow = BLOCK + -(-len(data) // BLOCK) * BLOCK
        if self._tar is None or (self._count and self._size + grow > self.part_bytes):
            self._close()
            part = f"train.{len(self.rows) + 1:02d}.tar"
            # open across calls of add(), closed by _close()
            self._tar = tarfile.open(  # noqa: SIM115
                self.out_dir / part, "w", format=tarfile.USTAR_FORMAT
            )
            self.rows.append((part, 0, 0))
            self._count = 0
            self._size = 2 * BLOCK + tarfile.RECORDSIZE  # the end, padded to a record at most
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._size += grow

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            name = self.rows[-1][0]
            self.rows[-1] = (name, self._count, (self.out_dir / name).stat().st_size)

    def finish(self) -> list[tuple[str, int, int]]:
        self._close()
        self._tar = None
        lines = [f"{name} {count} {size}" for name, count, size in self.rows]
        (self.out_dir / MANIFEST).write_text("\n".join(lines) + "\n")
        return self.rows


def pack(
    root: Path, out_dir: Path, quality: int, part_bytes: int, exclude: set[str]
) -> list[tuple[str, int, int]]:
    """Pack the crops under ``root`` as ``crops/<identity>/<file>.jpg`` into parts in
    ``out_dir`` (earlier parts there are removed first); returns (name, crops, bytes) each."""
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality {quality}: must be in 1..100")
    if part_bytes < MIN_PART_BYTES:
        raise ValueError(f"a part of {part_bytes} bytes is too small (at least {MIN_PART_BYTES})")
    crops = crops_of(root, exclude)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("train.*.tar"), out_dir / MANIFEST]:
        old.unlink(missing_ok=True)
    parts = _Parts(out_dir, part_bytes)
    for path in tqdm(crops, desc="packing", unit="crop", disable=None):
        parts.add(f"crops/{path.parent.name}/{path.name}", _encode(path, quality))
    return parts.finish()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.pack",
        description="Re-encode aligned crops and pack them into tar parts of a bounded size, "
        "one per call to the GPU machine (training/gpu_job.sh).",
    )
    p.add_argument("crops", type=Path, help="folder of <identity>/<file>.jpg crops")
    p.add_argument("out_dir", type=Path, help="where train.NN.tar and parts.txt are written")
    p.add_argument("--quality", type=int, default=60, help="JPEG quality of the packed crops")
    p.add_argument("--part-mib", type=float, default=52.0, help="largest part, in MiB")
    p.add_argument("--exclude", nargs="*", default=[], help="identity folders to leave out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rows = pack(
            args.crops, args.out_dir, args.quality, int(args.part_mib * 2**20), set(args.exclude)
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, count, size in rows:
        print(f"{args.out_dir / name}: {count} crops, {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
