"""Shared fixtures: the repository's models and the shared data folder (../shared/data)."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import pytest

# torch's OpenMP threads (libgomp) wait for work by spinning on a core: on CI's 2 cores, with
# two xdist workers each running torch on 2 threads (and the daemons the tests start), the
# spinning threads take the cores from those with work. Passive, they sleep: the training
# tests ran 2 to 3 times faster (tests/unit/test_training_export.py in 2 workers: 66 s ->
# 27 s; one training test 25-44 s -> 5.4 s beside other loads). Read when torch loads its
# libgomp, so set here, before any test module imports torch; the processes the tests start
# inherit it. The numbers torch computes are the same.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
SHARED_DATA = REPO.parent / "shared" / "data"
GOLDEN = REPO / "tests" / "golden"


def open_files() -> int:
    """How many files (sockets, pipes) this process has open: what a test that something
    leaves none open compares before and after (Linux's /proc/self/fd; a test skips without)."""
    return len(os.listdir("/proc/self/fd"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``first`` (the longest, a minute or more in CI) run before the others,
    the rest in their order: xdist hands out tests in file order, and the last-started long
    one set when the run ended, with one worker on it and the other idle."""
    items.sort(key=lambda item: item.get_closest_marker("first") is None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: the test needs the shared face images and videos."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (tests read real faces from there)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """models/facenet/facenet.onnx, the FaceNet facewatch ships, or skip."""
    from tests.facenet_model import NEEDS_SHIPPED_MODEL

    model = MODELS / "facenet" / "facenet.onnx"
    if not model.is_file():
        pytest.skip(NEEDS_SHIPPED_MODEL)
    return model


@pytest.fixture(scope="session")
def detector():
    """The shipped MTCNN on the default backend, 2 threads (one per CI core)."""
    from engines.mtcnn import MTCNN

    return MTCNN.load(MODELS / "mtcnn", threads=2)


@pytest.fixture(scope="session")
def test_model(tmp_path_factory) -> Path:
    """A random-weight FaceNet exported like a trained one (tests/facenet_model.py): for
    the mechanics of recognition, not its accuracy."""
    from tests.facenet_model import build_test_model

    data = SHARED_DATA if (SHARED_DATA / "README.md").is_file() else None
    return build_test_model(tmp_path_factory.getbasetemp() / "facenet-test-model", data)


@pytest.fixture(scope="session")
def torch_mtcnn(shared_data, tmp_path_factory) -> tuple[Path, dict]:
    """models/mtcnn copied to a temporary folder, with pnet/rnet/onet.pt2 exported beside the
    ONNX (torch.export, once a session: the torch backend's unit tests and the daemon's
    share it; read it, do not change it), and the export's differences from ONNX Runtime."""
    import shutil

    pytest.importorskip("torch")
    from training.export_torch import export_mtcnn

    folder = tmp_path_factory.mktemp("mtcnn")
    for name in ("pnet", "rnet", "onet"):
        for suffix in (".onnx", ".json"):
            shutil.copy(MODELS / "mtcnn" / f"{name}{suffix}", folder)
    diffs = export_mtcnn(shared_data / "weights" / "mtcnn", folder)
    return folder, diffs


@pytest.fixture(scope="session")
def torch_facenet(shared_data, tmp_path_factory) -> Path:
    """The random-weight test FaceNet exported with a torch program: ONNX + .pt2 (once a
    session, as ``torch_mtcnn``; read it, do not change it)."""
    pytest.importorskip("torch")
    from tests.facenet_model import build_test_model

    return build_test_model(tmp_path_factory.mktemp("facenet-pt2"), shared_data, True)


@pytest.fixture
def sqlite_default_build(monkeypatch) -> None:
    """sqlite3 connections as an SQLite built with its own defaults makes them: secure_delete
    off (Debian's build turns it on), so that a test of what a file keeps can fail."""
    connect = sqlite3.connect

    def default_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", default_build)


@pytest.fixture(scope="session")
def ipv6_loopback() -> str:
    """The address ::1, or skip: the test needs IPv6 on loopback (a host or container may
    have none)."""
    if not socket.has_ipv6:
        pytest.skip("this Python is built without IPv6")
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"::1 cannot be bound here (no IPv6 on loopback): {exc}")
    return "::1"
