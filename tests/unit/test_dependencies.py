"""The dependency floors: .ci/floor.txt, which the CI's floor check installs, pins the lowest
releases pyproject.toml allows, so that the versions facewatch promises are the ones tested."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # (pytest brings tomli on 3.10)
    tomllib = pytest.importorskip("tomli")

FLOOR = REPO / ".ci" / "floor.txt"


def requirements(pyproject: Path) -> dict[str, Requirement]:
    """pyproject's runtime dependencies and its dev extra's, by canonical name."""
    project = tomllib.loads(pyproject.read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {canonicalize_name(r.name): r for r in map(Requirement, listed)}


def pins(floor: Path) -> dict[str, Version]:
    """floor.txt's ``name==version`` lines, by canonical name."""
    found = {}
    for line in floor.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = Version(version)
    return found


def lowest(requirement: Requirement) -> Version | None:
    """The ``>=`` bound of a requirement, if it has one."""
    bounds = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return max(bounds) if bounds else None


def floor_problems(pyproject: Path, floor: Path) -> list[str]:
    """What floor.txt pins otherwise than pyproject's lower bounds: a pin must be allowed and
    in its bound's release series (numpy>=2: 2.0.x; onnxruntime>=1.19: 1.19.x), and every
    runtime dependency pinned."""
    wanted, pinned = requirements(pyproject), pins(floor)
    runtime = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    problems = [
        f"{Requirement(r).name}: not pinned in {floor.name}"
        for r in runtime
        if canonicalize_name(Requirement(r).name) not in pinned
    ]
    for name, version in pinned.items():
        requirement = wanted.get(name)
        bound = lowest(requirement) if requirement is not None else None
        if requirement is None or bound is None:
            problems.append(f"{name}=={version}: pyproject.toml sets no lower bound for it")
            continue
        width = max(2, len(bound.release))
        series = (bound.release + (0,) * width)[:width]
        if version not in requirement.specifier or version.release[:width] != series:
            problems.append(f"{name}=={version}: pyproject.toml's lowest is {requirement}")
    return problems


def test_the_floor_check_installs_the_lowest_versions_pyproject_allows() -> None:
    """A floor raised in pyproject.toml and not in .ci/floor.txt (or the reverse) would have
    the CI test versions nobody is promised."""
    assert floor_problems(REPO / "pyproject.toml", FLOOR) == []


def test_a_floor_that_drifted_is_named(tmp_path) -> None:
    """pyproject at onnxruntime>=1.17 and openvino>=2024.0 (as it was) against pins of 1.19
    and 2024.4, and a dependency left unpinned."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[project]\n"
        'dependencies = ["numpy>=2", "onnxruntime>=1.17", "openvino>=2024.0", "tqdm>=4.66"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=8"]\n'
    )
    floor = tmp_path / "floor.txt"
    floor.write_text(
        "# comment\nnumpy==2.0.2\nonnxruntime==1.19.0\nOpenVINO==2024.4.0\npytest==7.4.0\n"
    )
    assert floor_problems(pyproject, floor) == [
        "tqdm: not pinned in floor.txt",
        "onnxruntime==1.19.0: pyproject.toml's lowest is onnxruntime>=1.17",
        "openvino==2024.4.0: pyproject.toml's lowest is openvino>=2024.0",
        "pytest==7.4.0: pyproject.toml's lowest is pytest>=8",
    ]


def _floor_alone(tmp_path: Path, tools: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """A copy of .ci/floor in a clone of its own (no ../shared beside it), and an environment
    whose PATH holds only ``tools`` (no python3.10, 3.11 or 3.12)."""
    import shutil

    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "floor", repo / ".ci" / "floor")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return repo, {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def test_the_floor_check_without_a_python_it_can_install_says_so_and_skips(tmp_path) -> None:
    """Where python3 is 3.13 and no python3.10 exists (Ubuntu 25.04, Fedora 41), the floor
    check failed CI in pip: the floor's onnxruntime and openvino have no 3.13 wheels."""
    import subprocess

    repo, env = _floor_alone(tmp_path, ("bash", "dirname", "date"))
    run = subprocess.run(
        ["bash", str(repo / ".ci" / "floor")], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert "floor: skipped: no python3.10, python3.11 or python3.12 runs here" in run.stderr
    assert "set FLOOR_PYTHON" in run.stderr and not (repo / ".venv-floor").exists()


def test_the_floor_check_says_its_golden_checks_are_skipped_without_the_shared_data(
    tmp_path,
) -> None:
    """Without ../shared/data the floor passed with 93 tests skipped, its golden checks among
    them, and said nothing of it."""
    import subprocess

    repo, env = _floor_alone(tmp_path, ("bash", "dirname", "date", "rm", "false"))
    run = subprocess.run(
        ["bash", str(repo / ".ci" / "floor")],
        env={**env, "FLOOR_PYTHON": "false"},  # stops at the set-up: the note comes before
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "floor: ../shared/data not found: the golden checks this floor is for" in run.stderr
    assert "are SKIPPED" in run.stderr
