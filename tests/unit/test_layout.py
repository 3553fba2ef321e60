"""The layout of DESIGN.md: the dependency direction training -> engines <- daemon, and the
``daemon`` package is this repository's (not PyPI's python-daemon)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=300,
    )
    return set(result.stdout.split())


def modules_of(package: str) -> list[str]:
    return sorted(
        f"{package}.{p.stem}" for p in (REPO / package).glob("*.py") if p.stem != "__init__"
    )


def _imported(node: ast.AST) -> list[str]:
    """The modules an import statement names, or an ``import_module`` / ``__import__`` call
    of a literal name."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module] if node.level == 0 and node.module else []
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        called = getattr(node.func, "id", getattr(node.func, "attr", None))
        if called in ("import_module", "__import__"):
            return [str(node.args[0].value)]
    return []


def imports_in(package: str) -> list[tuple[str, str]]:
    """("file:line", top-level module) for every import written in ``package``'s files, at
    any depth: in functions and ``if TYPE_CHECKING`` blocks too."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        where = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), where)):
            found += [(f"{where}:{node.lineno}", m.split(".")[0]) for m in _imported(node)]
    return found


# The one module that imports torch, when the torch backend is chosen (import_torch); the
# other engines/torch_*.py modules reach it through that function.
TORCH_MODULES = {"engines/torch_backend.py"}


def test_no_import_anywhere_goes_against_the_dependency_direction():
    """Also the imports that run only when a function is called, which importing every
    module (the tests below) does not see."""
    wrong = [f"{where}: {module}" for where, module in imports_in("daemon") if module == "training"]
    for where, module in imports_in("engines"):
        torch_here = module == "torch" and where.split(":")[0] not in TORCH_MODULES
        if module in ("daemon", "training") or torch_here:
            wrong.append(f"{where}: {module}")
    assert wrong == []
    seen = {(where.split(":")[0], module) for where, module in imports_in("engines")}
    assert ("engines/torch_backend.py", "torch") in seen  # the scan sees a lazy import


# each runtime that reports its use to its vendor unless told not to, and the one function
# that imports it told not to
QUIETED = {"onnxruntime": "import_onnxruntime", "openvino": "import_openvino"}
QUIETED_IN = {"engines/ort.py": "onnxruntime", "engines/openvino_backend.py": "openvino"}


def test_runtimes_are_imported_only_with_their_telemetry_off():
    """ONNX Runtime reads whether to send its usage events once, as a process first starts
    it, and OpenVINO sends one at its import: every import goes through the function that
    turns them off (engines.ort.import_onnxruntime, engines.openvino_backend.import_openvino)
    or follows a call of it in the same file (onnxruntime.quantization)."""
    unguarded = []
    for package in ("daemon", "engines", "training", "bench"):
        for where, module in imports_in(package):
            path, line = where.split(":")
            if module not in QUIETED or QUIETED_IN.get(path) == module:
                continue
            tree = ast.parse((REPO / path).read_text())
            calls = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and getattr(n.func, "id", None) == QUIETED[module]]  # fmt: skip
            if not any(call < int(line) for call in calls):
                unguarded.append(where)
    assert unguarded == []
    seen = {(where.split(":")[0], module) for where, module in imports_in("engines")}
    assert set(QUIETED_IN.items()) <= seen  # the scan sees their imports


def test_the_daemon_package_is_ours_not_python_daemon():
    """``daemon`` is also PyPI's python-daemon: the one imported must be this repository's."""
    import daemon

    assert Path(daemon.__file__).resolve().parent.parent == REPO.resolve()


def test_engines_import_neither_torch_nor_daemon():
    """Every engines module, optional backends included, imports without torch or TensorRT
    (they are imported only when their backend is chosen)."""
    modules = modules_of("engines")
    assert "engines.mtcnn" in modules and "engines.tensorrt" in modules
    loaded = imported_after("import " + ", ".join(modules))
    assert not loaded & {"torch", "daemon", "training", "tensorrt"}


def test_the_engines_package_names_every_backend():
    """``engines/__init__`` is where a reader looks for the backends (it named two of five)."""
    import engines
    from engines.loader import BACKENDS

    assert engines.__doc__ is not None
    assert [b for b in BACKENDS if f"``{b}``" not in engines.__doc__] == []


def test_the_config_takes_every_backend_the_engines_have() -> None:
    """The config's `engines.backend` is a list of its own (a type, for the schema and its
    error message): a backend added to the engines is one a config can choose."""
    from typing import get_args

    from daemon.config_pipeline import EnginesConfig
    from engines.loader import BACKENDS

    assert sorted(get_args(EnginesConfig.model_fields["backend"].annotation)) == sorted(BACKENDS)


def test_daemon_imports_no_training_and_no_torch():
    modules = modules_of("daemon")
    assert "daemon.cli" in modules and "daemon.gallery" in modules
    loaded = imported_after("import " + ", ".join(modules))
    assert not loaded & {"torch", "training"}


def test_the_command_line_loads_no_torch():
    """`facewatch` builds every subcommand's parser (the training ones come through an entry
    point) at each start, `facewatch run` included: that must not load PyTorch."""
    loaded = imported_after("from daemon.cli import build_parser; build_parser()")
    assert "training" in loaded  # the training commands were registered...
    assert "torch" not in loaded  # ...without importing torch


def test_selecting_an_unknown_or_missing_backend_is_one_clear_error(tmp_path):
    from engines import EngineError, load_engine

    with pytest.raises(EngineError, match="unknown engine backend 'cuda'"):
        load_engine(tmp_path / "x.onnx", backend="cuda")
    with pytest.raises(EngineError, match="tensorrt"):
        load_engine(tmp_path / "x.onnx", backend="tensorrt")
    with pytest.raises(EngineError, match=r"x\.onnx: model file not found"):
        load_engine(tmp_path / "x.onnx", backend="onnxruntime")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "export", "weights.pt"],
        ["train", "torch-program", "models/mtcnn/pnet.onnx"],
        ["train", "triplet", "--data-dir", "crops"],
    ],
)
def test_train_commands_without_pytorch_say_what_to_install(argv):
    """A daemon-only install (no `train` extras) gets one line naming the extras, no
    traceback, and exit status 2."""
    code = (
        "import sys; sys.modules['torch'] = None; from daemon.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: facewatch train {argv[1]}: needs the training extras, which are not installed "
        f"(no module 'torch'): pip install -e '{REPO}[train]'"
    )


def test_the_version_names_the_commit_of_the_checkout_it_runs_from(tmp_path) -> None:
    """Every commit said 'facewatch 0.1.0': after a git pull and a restart nothing told which
    code ran. A checkout's commit is read from its .git (loose or packed ref, a detached
    HEAD, a worktree); a wheel (no .git) says the version alone."""
    from daemon import __version__, _checkout_commit

    sha = "0123456789abcdef0123456789abcdef01234567"
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
    assert _checkout_commit(git) == sha
    loose = sha[::-1]
    (git / "refs" / "heads" / "main").write_text(loose + "\n")
    assert _checkout_commit(git) == loose
    worktree = tmp_path / "tree"
    (worktree / "gitdir").mkdir(parents=True)
    (worktree / ".git").write_text(f"gitdir: {worktree / 'gitdir'}\n")
    (worktree / "gitdir" / "HEAD").write_text(sha + "\n")  # detached
    assert _checkout_commit(worktree / ".git") == sha
    (worktree / ".git").write_text("gitdir: gitdir\n")  # relative, as a submodule's
    assert _checkout_commit(worktree / ".git") == sha
    assert _checkout_commit(tmp_path / "wheel" / ".git") is None
    (git / "HEAD").write_text("garbage")
    assert _checkout_commit(git) is None

    shown = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--version"], capture_output=True, text=True,
        cwd=REPO, check=True, timeout=300,
    ).stdout.strip()  # fmt: skip
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    if not head:
        pytest.skip("no git checkout here (an unpacked archive): the version alone")
    assert shown == f"facewatch {__version__}+g{head[:7]}"


def test_threads_0_is_the_cores_the_cgroups_cpu_quota_allows(tmp_path, monkeypatch) -> None:
    """Under systemd's CPUQuota=150% (cgroup v2 cpu.max, here on the service's parent
    slice), engines.threads 0 runs 2 threads, not one per core of the box; without a quota
    ("max", or -1 in cgroup v1) every core it may run on."""
    from engines import loader

    group = tmp_path / "system.slice" / "facewatch.service"
    group.mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (group / "cpu.max").write_text("max 100000\n")
    (group.parent / "cpu.max").write_text("150000 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/facewatch.service\n")
    monkeypatch.setattr(loader, "PROC_CGROUP", proc)
    monkeypatch.setattr(loader, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert loader.cpu_threads(0) == 2 and loader.cpu_threads(5) == 5
    (group.parent / "cpu.max").write_text("max 100000\n")
    assert loader.cpu_threads(0) == 16
    # cgroup v1 (Ubuntu 20.04, JetPack 5), and a hybrid host's v2 line beside it: 0.5 of a core
    v1 = tmp_path / "cpu,cpuacct" / "system.slice" / "facewatch.service"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:cpu,cpuacct:/system.slice/facewatch.service\n0::/system.slice/x\n")
    assert loader.cpu_threads(0) == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")  # (no quota)
    assert loader.cpu_threads(0) == 16
    # a container: the path it is told is its host's, its own group is the mount's root
    proc.write_text("4:cpu,cpuacct:/docker/0123abcd\n")
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert loader.cpu_threads(0) == 3


MAP = REPO / "docs" / "layout.md"
MAPPED_PACKAGES = ("daemon", "engines", "training", "bench")


def mapped_modules() -> set[str]:
    """Every module and script of the packages whose files each have a bullet of the map."""
    return {
        path.relative_to(REPO).as_posix()
        for package in MAPPED_PACKAGES
        for pattern in ("*.py", "*.sh")
        for path in (REPO / package).glob(pattern)
        if path.name != "__init__.py"
    }


def test_the_module_map_names_every_module_and_only_modules_that_exist() -> None:
    """docs/layout.md is where a reader finds each thing: a module added without a line there
    (or one renamed, moved or removed while its line stayed) would make the map lie."""
    text = MAP.read_text()
    named = set(re.findall(r"`((?:daemon|engines|training|bench|tests)/[\w/]+\.(?:py|sh))`", text))
    # and the tests' shared modules and generators (test files are named by what they test)
    written = mapped_modules() | {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "tests").rglob("*.py")
        if not path.name.startswith(("test_", "__init__"))
    }
    assert sorted(written - named) == [], "not on the map (docs/layout.md)"
    assert sorted(named - written) == [], "on the map (docs/layout.md) but not in the repository"


def test_each_module_begins_a_bullet_of_the_map_of_its_own() -> None:
    """A search for a module's path finds the bullet that says what it holds, not half a
    sentence in a bullet of four modules: each module of daemon/, engines/, training/ and
    bench/ begins exactly one bullet (at any depth: a module that belongs to another is a bullet
    under it), ``- `daemon/spool.py`: what it holds``."""
    bullets = re.findall(r"^[ \t]*[-*] (.*)$", MAP.read_text(), re.MULTILINE)
    begun = Counter(
        found[1]
        for bullet in bullets
        if (found := re.match(r"`((?:daemon|engines|training|bench)/[\w/]+\.(?:py|sh))`", bullet))
    )
    modules = mapped_modules()
    without = [f"{m}: no bullet begins with it" for m in sorted(modules) if begun[m] == 0]
    twice = [f"{m}: {begun[m]} bullets begin with it" for m in sorted(modules) if begun[m] > 1]
    assert without + twice == [], (
        "docs/layout.md: one bullet per module, beginning with its path:\n"
        + "\n".join(without + twice)
    )


# DESIGN.md's "files under ~400 lines, functions under ~50", its numbers as they are now that
# every module and function keeps to them: the code of daemon/, engines/, training/ and bench/
# (tests, long lists of what a user sees, are not held)
MOST_LINES_PER_MODULE = 400
MOST_LINES_PER_FUNCTION = 50


def test_modules_and_functions_keep_to_the_sizes_design_asks() -> None:
    too_long = []
    for package in ("daemon", "engines", "training", "bench"):
        for path in sorted((REPO / package).rglob("*.py")):
            where, text = path.relative_to(REPO).as_posix(), path.read_text()
            if (module_lines := text.count("\n")) > MOST_LINES_PER_MODULE:
                too_long.append(f"{where}: {module_lines} lines")
            for node in ast.walk(ast.parse(text, where)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MOST_LINES_PER_FUNCTION:
                        too_long.append(f"{where}:{node.lineno} {node.name}(): {lines} lines")
    assert too_long == [], "split these (DESIGN.md, Style):\n" + "\n".join(too_long)
