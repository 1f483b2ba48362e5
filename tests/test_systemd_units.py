"""The shipped systemd units pass ``systemd-analyze verify`` and keep the settings the deployment relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[1] / "systemd"
EXEC = "/opt/bridge/venv/bin/bridge"


def _staged(unit: str, folder: Path) -> Path:
    """A copy whose ExecStart binary exists here (verify refuses a missing one); the rest is untouched."""
    text = (UNITS / unit).read_text(encoding="utf-8")
    assert f"ExecStart={EXEC} run -c " in text
    copy = folder / unit
    copy.write_text(text.replace(f"ExecStart={EXEC}", f"ExecStart={sys.executable}"), encoding="utf-8")
    return copy


@pytest.mark.parametrize(("unit", "verified"), [("bridge.service", "bridge.service"),
                                                ("bridge@.service", "bridge@ut11.service")])
def test_unit_passes_systemd_analyze_verify(unit: str, verified: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; .ci/run does it)")
    _staged(unit, tmp_path)
    # An instance path next to the template: verify loads bridge@.service with %i = ut11.
    result = subprocess.run([analyze, "verify", str(tmp_path / verified)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    output = result.stdout + result.stderr
    # Only lines about our units count: a container's own units may draw unrelated complaints.
    relevant = [line for line in output.splitlines() if "bridge" in line or str(tmp_path) in line]
    assert relevant == [], output
    assert result.returncode == 0 or output.strip(), output


@pytest.mark.parametrize("unit", ["bridge.service", "bridge@.service"])
def test_unit_keeps_the_settings_the_deployment_relies_on(unit: str) -> None:
    lines = (UNITS / unit).read_text(encoding="utf-8").splitlines()
    settings = [line for line in lines if re.match(r"^[A-Za-z]+=", line)]
    values = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in settings}
    for key, value in {"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "Restart": "on-failure",
                       "User": "bridge", "Group": "exchange", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                       "PrivateTmp": "yes", "ProtectHome": "yes", "PrivateDevices": "yes",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet": "",
                       "SystemCallFilter": "@system-service", "UMask": "0027", "KillSignal": "SIGTERM"}.items():
        assert values.get(key) == value, key
    assert {line.split(":", 1)[0] for line in settings if line.startswith("LoadCredential=")} == {
        "LoadCredential=sftp-key", "LoadCredential=bitrix24-webhook"}
    assert "StateDirectory" in values and "ReadWritePaths" in values and "TimeoutStopSec" in values
    # Every setting says why it is there: the line above it is a comment.
    for index, line in enumerate(lines):
        if re.match(r"^[A-Za-z]+=", line):
            assert lines[index - 1].startswith("#"), f"{unit}: no comment above {line!r}"
