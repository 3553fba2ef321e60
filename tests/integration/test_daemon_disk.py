"""The daemon and a full disk at start: a real (small) file system filled to the last block
and inode. A disk that fills while the daemon runs is handled by each output (it logs and
goes on); one that is full when it starts must not pass for a config error, which systemd
does not restart: the daemon would stay down after the space is freed."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
import yaml

from daemon.spool import Spool
from tests.conftest import REPO
from tests.integration.services import FACEWATCH, daemon_settings

pytestmark = pytest.mark.slow

CLIP = REPO / "configs" / "demo" / "hamilton_360p.mp4"


@pytest.fixture
def small_disk(tmp_path):
    """A 512 kB tmpfs with 64 inodes (``fill`` fills it); skipped where mounting is refused."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,nr_inodes=64", "tmpfs", str(where)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        pytest.skip(f"a small disk is a tmpfs, and mounting one needs root: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> None:
    """Every block and every inode of ``disk`` taken."""
    with contextlib.suppress(OSError), (disk / "filler").open("wb") as out:
        while True:
            out.write(bytes(4096))
            out.flush()
    with contextlib.suppress(OSError):
        for k in range(1000):
            (disk / f"inode-{k}").touch()


def run_daemon(tmp_path: Path, **sections: object) -> subprocess.CompletedProcess[str]:
    settings = daemon_settings([{"name": "cam", "url": str(CLIP), "fps": 5}], 9, tmp_path)
    for name, value in sections.items():
        settings[name] = {**settings.get(name, {}), **value}  # type: ignore[dict-item]
    config = tmp_path / "facewatch.yaml"
    config.write_text(yaml.safe_dump(settings))
    return subprocess.run(
        [str(FACEWATCH), "run", "--config", str(config), "--run-for", "1"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_a_full_disk_at_start_exits_1_for_systemd_to_retry_and_then_runs(
    tmp_path, small_disk
) -> None:
    spool_dir = small_disk / "spool"
    Spool(spool_dir).close()  # the spool of an earlier run, then the disk filled
    fill(small_disk)
    full = run_daemon(tmp_path, mqtt={"spool_dir": str(spool_dir)})
    assert full.returncode == 1, full.stderr[-2000:]
    assert "mqtt.spool_dir: MQTT spool" in full.stderr and "systemd starts facewatch again" in (
        full.stderr
    )
    archive = run_daemon(tmp_path, archive={"dir": str(small_disk / "archive")})
    assert archive.returncode == 1, archive.stderr[-2000:]
    assert "archive.dir:" in archive.stderr and "No space left on device" in archive.stderr
    for path in small_disk.iterdir():  # space freed: what systemd's next start finds
        if path.is_file():
            path.unlink()
    freed = run_daemon(
        tmp_path, mqtt={"spool_dir": str(spool_dir)}, archive={"dir": str(small_disk / "archive")}
    )
    assert freed.returncode == 0, freed.stderr[-2000:]
