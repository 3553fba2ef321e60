"""`pip install .` without -e: the wheel carries the shipped models and configs, and the
installed commands find them (they looked for them beside the packages, in site-packages)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from daemon import __version__
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SOURCES = ["pyproject.toml", "README.md", "LICENSE", "daemon", "engines", "training", "models", "configs",
           "systemd"]  # fmt: skip


def test_a_wheel_install_finds_its_models_and_configs(tmp_path, shared_data) -> None:
    pytest.importorskip("setuptools", reason="building the wheel here needs setuptools")
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info there
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pt2")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w",
                    str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("facewatch-*.whl"))
    assert wheel.name.startswith(f"facewatch-{__version__}-"), "one version, the package's"
    prefix = tmp_path / "prefix"  # as into a venv or /usr/local: PREFIX/lib/..., PREFIX/share
    # --ignore-installed: else pip uninstalls the facewatch of the environment running it
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--ignore-installed",
                    "--prefix", str(prefix), str(wheel)], check=True, capture_output=True, timeout=300)  # fmt: skip
    assert (Path(sys.executable).parent / "facewatch").exists(), "the running one is intact"
    purelib = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    share = prefix / "share" / "facewatch"
    assert (share / "models" / "mtcnn" / "pnet.onnx").is_file()
    assert (share / "configs" / "default.yaml").is_file()

    def installed(*args: str) -> subprocess.CompletedProcess[str]:
        code = "import sys; from daemon.cli import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run(
            [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
            env={"PYTHONPATH": purelib, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300,
        )  # fmt: skip

    where = installed("run", "--help")
    assert where.returncode == 0 and str(share / "configs" / "default.yaml") in (
        "".join(where.stdout.split())  # (argparse wraps the help at any character)
    ), where.stdout
    valid = installed("validate-config", str(share / "configs" / "default.yaml"))
    assert valid.returncode == 0, valid.stderr
    found = installed("detect", str(shared_data / "images" / "obama.jpg"))
    assert found.returncode == 0 and ": 2 faces" in found.stdout, found.stdout + found.stderr
    code = "import engines.loader as m; print(m.__file__); print(m.data_root())"
    used = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": purelib}, check=True, timeout=300,
    ).stdout.split()  # fmt: skip
    assert used == [str(Path(purelib) / "engines" / "loader.py"), str(share)], "not the checkout"
