"""Where the shipped data folders (schemas/, templates/) are, installed or not."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder ``name`` ("schemas" or "templates").

    An installed bridge carries them inside the package (setup.cfg maps the
    top-level folders into ``bridge.schemas`` / ``bridge.templates``); a source
    checkout has them beside the package.
    """
    installed = _PACKAGE / name
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / name
