"""The installed bridge (a regular pip install, as a sysadmin makes it) works from any folder."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SAMPLES


def test_every_package_is_listed_for_installation() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")
    listed = set(setup["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "bridge").rglob("__init__.py")}
    assert found - listed == set(), "add these to [options] packages in setup.cfg"


def test_installed_console_script_runs_the_quick_start_from_elsewhere(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "bridge"
    if not script.exists():
        pytest.skip("bridge is not installed in this interpreter's environment (run the README's first command)")
    shutil.copytree(SAMPLES / "exchange", tmp_path / "exchange")
    config = tmp_path / "bridge.toml"
    config.write_text('[state]\npath = "var/bridge.db"\n[archive]\npath = "var/archive"\nquarantine = "var/quarantine"\n'
                      '[crm]\nkind = "sandbox"\npath = "var/crm.db"\n', encoding="utf-8")
    run = lambda *args: subprocess.run([str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    ingest = run("ingest", "-c", str(config), str(tmp_path / "exchange"))
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    dump = run("sandbox", "-c", str(config), "dump", "--json")
    assert json.loads(dump.stdout)["products"]
    strict = run("validate", "--strict", str(tmp_path / "exchange" / "ut11"))  # the shipped schemas are found
    assert "no such file" not in strict.stdout + strict.stderr.lower() and "Traceback" not in strict.stderr
