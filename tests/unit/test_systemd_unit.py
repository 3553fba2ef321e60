"""The shipped systemd unit: it verifies cleanly and its exposure score stays low."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "facewatch.service"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's facewatch (verify checks it)."""
    here = Path(sys.executable).with_name("facewatch")
    text = UNIT.read_text().replace("/opt/facewatch/.venv/bin/facewatch", str(here))
    path = tmp_path / "facewatch.service"
    path.write_text(text)
    return path


def test_unit_verifies_without_a_word(tmp_path) -> None:
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr


def test_exposure_score_at_most_3(tmp_path) -> None:
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    assert float(found.group(1)) <= 3.0


def test_unit_is_notify_with_watchdog_reload_and_credential() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "LoadCredential=mqtt_password:",
        "User=facewatch",
    ):
        assert line in text


def test_the_docs_second_unit_differs_in_its_config_and_state_folder_only(tmp_path) -> None:
    """docs/operations.md's "Two daemons on one host" makes the second unit with sed from
    the shipped one. Its expressions must still match the unit's lines (a changed
    ExecStart= left the copy on the first one's config), and the copy must verify."""
    docs = (REPO / "docs" / "operations.md").read_text()
    recipe = docs[docs.index("### Two daemons on one host") :]
    expressions = re.findall(r"-e '(s#[^']+)'", recipe[: recipe.index("| sudo tee")])
    assert len(expressions) == 2, expressions
    copy = subprocess.run(
        ["sed", *(arg for e in expressions for arg in ("-e", e)), str(UNIT)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    changed = [
        (old, new)
        for old, new in zip(UNIT.read_text().splitlines(), copy.splitlines(), strict=True)
        if old != new
    ]
    assert changed == [
        (
            "ExecStart=/opt/facewatch/.venv/bin/facewatch run --config /etc/facewatch/facewatch.yaml",
            "ExecStart=/opt/facewatch/.venv/bin/facewatch run --config /etc/facewatch/garage.yaml",
        ),
        ("StateDirectory=facewatch", "StateDirectory=facewatch-garage"),
    ]
    here = Path(sys.executable).with_name("facewatch")
    unit = tmp_path / "facewatch-garage.service"
    unit.write_text(copy.replace("/opt/facewatch/.venv/bin/facewatch", str(here)))
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr
