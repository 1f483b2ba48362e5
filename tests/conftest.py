"""Shared fixtures: where the reference exports are, and a CLI runner."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli.main import cli

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "commerceml"
SAMPLES = REPO / "samples"


@pytest.fixture
def reference() -> Path:
    """The real 1C exports in ../shared (read only); tests using it skip when it is absent."""
    if not (REFERENCE / "samples").is_dir():
        pytest.skip("../shared/reference/commerceml is not present")
    return REFERENCE


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def inspect_json(*paths: Path | str) -> tuple[int, list[dict]]:
    code, output = run_cli("inspect", "--json", *map(str, paths))
    return code, json.loads(output)


@pytest.fixture(autouse=True)
def _no_warnings_leak():
    """Like watchdog's suite: a Python warning during a test is a bug."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
