"""Starting the daemon: the engines loaded and warmed up (``EngineLoading.load_engines``,
a part of ``Service``), with systemd's start timeout extended while a TensorRT plan is
built; a stop asked meanwhile (``_StopWatch`` says at once what it waits for, and no
further load is begun: ``StoppedWhileStarting``); and memory running out while they load,
no config error but ``StartFailed`` (exit status 1, which systemd retries), said with the
memory there was and the limits that apply.

Its lines are the service's: they are logged as ``daemon.service``.
"""

from __future__ import annotations

import logging
import re
import resource
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np

from daemon.config import WARM_UP_HW, Config, ConfigError
from daemon.engine_choice import EngineChoice, say_plan_build
from daemon.preflight import resolve_model
from daemon.systemd_notify import sd_notify
from engines.base import EngineError
from engines.facenet import FaceNet
from engines.loader import CGROUP_ROOT, PROC_CGROUP
from engines.mtcnn import MTCNN

logger = logging.getLogger("daemon.service")

PLAN_BUILD_S = 1800  # systemd's start timeout is extended by this for each TensorRT build


def _building_plan(onnx_path: Path) -> None:
    """Before a TensorRT plan is built at start: say so, and give systemd the time."""
    say_plan_build(onnx_path)
    sd_notify(f"EXTEND_TIMEOUT_USEC={PLAN_BUILD_S * 1_000_000}")
    sd_notify(f"STATUS=building the TensorRT plan for {onnx_path.name}")


class StartFailed(Exception):
    """The daemon cannot start for now, through no fault of its config (out of memory while
    the engines load): exit status 1, which systemd's Restart=on-failure retries (a
    ConfigError's 2 it never retries)."""


class StoppedWhileStarting(Exception):
    """SIGTERM came while the engines loaded: the next load is not begun (Ctrl-C is Python's
    KeyboardInterrupt until the daemon runs: it ends the start itself)."""


class EngineLoading:
    """``Service``'s engine load, one of its bases: the attributes declared here are set by
    ``Service.__init__``."""

    config: Config
    config_path: str | None
    _stop: threading.Event
    _loading: str | None
    _engines_said: str

    def load_engines(self) -> tuple[MTCNN, FaceNet | None]:
        """The config's detector and FaceNet (None without a model), warmed up; a
        ConfigError names what is wrong. A stop asked meanwhile begins no further load
        (``StoppedWhileStarting``); one asked during a load is said, and waits for it
        (SIGTERM; Ctrl-C, said too, interrupts it). Memory running out is no config error:
        ``StartFailed``."""
        cfg = self.config
        choice = EngineChoice.of_config(cfg, self.config_path, on_build=self._building_plan)
        try:
            with _StopWatch(self):
                self._loading = f"the detector (MTCNN in {cfg.engines.mtcnn_dir})"
                detector = choice.detector()
                self._stop_point()
                model = resolve_model(cfg)
                facenet = None
                if model is not None:
                    self._loading = f"the FaceNet model {model}"
                    facenet = choice.facenet(model)
                    self._stop_point()
                self._engines_said = choice.said(facenet)
                self._loading = "the engines' warm-up"
                self._warm_up(detector, facenet)
        except (EngineError, MemoryError, RuntimeError) as exc:
            if _out_of_memory(exc):  # not the config's fault: a restart may find memory
                raise StartFailed(
                    f"out of memory while loading {self._loading} ({_memory_said(exc)}): "
                    f"{str(exc) or type(exc).__name__}"
                ) from None
            if not isinstance(exc, EngineError):
                raise
            raise ConfigError(str(exc)) from None
        finally:
            self._loading = None
        return detector, facenet

    def _stop_point(self) -> None:
        """Between two loads: a stop asked meanwhile ends the start here."""
        if self._stop.is_set():
            raise StoppedWhileStarting

    def _building_plan(self, onnx_path: Path) -> None:
        self._stop_point()  # (a detector's three plans: not the next one)
        self._loading = f"the TensorRT plan build of {onnx_path}"
        _building_plan(onnx_path)

    def _warm_up(self, detector: MTCNN, facenet: FaceNet | None) -> None:
        started = time.monotonic()
        rng = np.random.default_rng(0)
        detector.detect([rng.integers(0, 255, (*WARM_UP_HW, 3), dtype=np.uint8)])
        if facenet is not None:
            height, width = facenet.image_size_hw
            facenet.embed(np.zeros((2, height, width, 3), np.uint8))
        logger.info("engines warm in %.1f s", time.monotonic() - started)


class _StopWatch:
    """While the engines load, a stop signal is said at once, with what it waits for: a
    load (a TensorRT build: minutes) is one call that Python's signal handler cannot
    interrupt, and runs only after. The signal's number reaches this thread through
    ``signal.set_wakeup_fd``, written as the signal arrives."""

    def __init__(self, service: EngineLoading) -> None:
        self.service = service
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._thread = threading.Thread(target=self._watch, name="stop-watch", daemon=True)
        self._previous: int | None = -1

    def __enter__(self) -> _StopWatch:
        try:
            self._previous = signal.set_wakeup_fd(self._write.fileno())
        except ValueError:  # not the main thread (a test's): the loads are not watched
            self._previous = None
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.set_wakeup_fd(self._previous)
        self._write.close()  # the watch ends
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self._read.close()

    def _watch(self) -> None:
        said = False
        while True:
            try:
                signals = self._read.recv(64)
            except OSError:
                return
            if not signals:
                return
            stops = [n for n in signals if n in (signal.SIGTERM, signal.SIGINT)]
            loading = self.service._loading
            if stops and loading and not said:
                logger.info("%s", _stop_said(stops[0], loading))
                said = True


def _stop_said(signum: int, loading: str) -> str:
    """What a stop signal during a load does: SIGTERM waits for the load to end; Ctrl-C
    (Python's KeyboardInterrupt until ``run`` takes SIGINT over) cuts it short, as soon as
    the step under way returns to Python."""
    name = signal.Signals(signum).name
    if signum == signal.SIGINT:
        return (
            f"{name} during the load of {loading}: facewatch is interrupted as soon as the "
            "step under way returns (a TensorRT build: when it ends)"
        )
    return (
        f"{name} during the load of {loading}: facewatch stops once it ends (the load cannot "
        "be cut short)"
    )


# what engines say when memory runs out: OpenVINO's and ONNX Runtime's C++ (std::bad_alloc),
# CUDA's (cudaErrorMemoryAllocation, CUDA_ERROR_OUT_OF_MEMORY), PyTorch's, the OS's (ENOMEM)
_OUT_OF_MEMORY = re.compile(
    r"bad_alloc|out of memory|out_of_memory|outofmemory|memoryallocation|"
    r"cannot allocate memory|failed to allocate",
    re.IGNORECASE,
)


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what an engine's error wraps) is memory running out."""
    while exc is not None:
        if isinstance(exc, MemoryError) or _OUT_OF_MEMORY.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _memory_said(exc: BaseException) -> str:
    """How much memory there was, and the limits smaller than the machine's that apply."""
    said = []
    available = _meminfo_mb("MemAvailable")
    if available is not None:
        said.append(f"{available} MB free on this machine")
    limit = _cgroup_memory_mb()
    if limit is not None:
        said.append(
            f"a memory limit of {limit[0]} MB, {limit[1]} MB in use (MemoryMax=, docker --memory)"
        )
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        said.append(f"an address-space limit of {soft >> 20} MB (LimitAS=, ulimit -v)")
    if re.search(r"cuda|gpu|tensorrt", str(exc), re.IGNORECASE):
        said.append("GPU memory: nvidia-smi shows which processes hold it")
    return "; ".join(said) or "free memory unknown"


def _meminfo_mb(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0]) >> 10  # (kB)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_memory_mb() -> tuple[int, int] | None:
    """This process's cgroup's memory limit and use, in MB (v2's memory.max and
    memory.current, v1's memory.limit_in_bytes and usage_in_bytes), or None without one."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, group = [*line.split(":", 2), "", ""][:3]
        if not controllers:  # v2
            folder, files = CGROUP_ROOT / group.lstrip("/"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # v1
            folder = CGROUP_ROOT / "memory" / group.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        try:
            limit, used = (int((folder / name).read_text()) for name in files)
        except (OSError, ValueError):  # "max": no limit; or a group it cannot read
            continue
        if limit < 1 << 60:  # (v1's "no limit" is a huge number)
            return limit >> 20, used >> 20
    return None
