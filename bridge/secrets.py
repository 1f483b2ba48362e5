"""Where secrets come from: the environment or systemd credentials, never the config file."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.errors import UserError


def credential_path(name: str, base: Path) -> Path:
    """A key file: absolute path as is; a bare name under $CREDENTIALS_DIRECTORY (systemd
    LoadCredential) when the service provides it; else relative to the config file's folder."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / name).is_file():
        return Path(credentials) / name
    return base / path


def read_secret(*, env: str | None = None, credential: str | None = None, what: str = "secret") -> str:
    """The value of an environment variable, or of a file in $CREDENTIALS_DIRECTORY."""
    if credential:
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / credential).is_file():
            return (Path(credentials) / credential).read_text(encoding="utf-8").strip()
    if env and os.environ.get(env):
        return os.environ[env].strip()
    where = " or ".join(x for x in (f"environment variable {env}" if env else "",
                                    f"credential '{credential}' ($CREDENTIALS_DIRECTORY)" if credential else "") if x)
    raise UserError(f"the {what} is not set: provide it through {where}")
