"""The ``[[source]]`` and ``[daemon]`` parts of the configuration (checked with the rest, all at once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.transport.base import DEFAULT_IGNORE, SourceSettings

SOURCE_KINDS = ("folder", "sftp")
_COMMON = {"name", "kind", "path", "min_age", "done_marker", "ignore", "after", "move_to", "polling", "interval"}
_SFTP = {"host", "port", "user", "key_file", "known_hosts", "connect_timeout", "io_timeout"}
DAEMON_KEYS = {"rescan", "spool", "deliver_patience", "deactivate_after"}


def _number(table: dict[str, Any], key: str, where: str, default: float, problems: list[str],
            minimum: float = 0.0) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        problems.append(f"{where}.{key} must be a number >= {minimum:g}")
        return default
    return float(value)


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def sources(data: dict[str, Any], base: Path, problems: list[str]) -> list[SourceSettings]:
    raw = data.get("source", [])
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        problems.append("source must be an array of tables ([[source]])")
        return []
    result: list[SourceSettings] = []
    names: set[str] = set()
    for index, table in enumerate(raw):
        where = f"source[{index}]"
        if not isinstance(table, dict):
            problems.append(f"{where} must be a table")
            continue
        name = table.get("name")
        if not isinstance(name, str) or not name.strip() or "/" in name:
            problems.append(f"{where}.name must be a short name without '/' (it keys the ledger)")
            name = f"source{index}"
        elif name in names:
            problems.append(f"{where}.name '{name}' is used by another source")
        names.add(name)
        where = f"source[{name}]"
        kind = table.get("kind", "folder")
        if kind not in SOURCE_KINDS:
            problems.append(f"{where}.kind: unknown kind '{kind}' (known: {', '.join(SOURCE_KINDS)})")
            continue
        known = _COMMON | (_SFTP if kind == "sftp" else set())
        for key in table:
            if key not in known:
                problems.append(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
        path = table.get("path")
        if not isinstance(path, str) or not path.strip():
            problems.append(f"{where}.path must be a folder path")
            path = "."
        after = table.get("after", "delete")
        if after not in ("delete", "move"):
            problems.append(f"{where}.after must be \"delete\" or \"move\"")
        move_to = table.get("move_to")
        if after == "move" and not isinstance(move_to, str):
            problems.append(f"{where}.move_to is required with after = \"move\"")
        ignore = table.get("ignore", list(DEFAULT_IGNORE))
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            problems.append(f"{where}.ignore must be a list of patterns")
            ignore = list(DEFAULT_IGNORE)
        done_marker = table.get("done_marker")
        if done_marker is not None and (not isinstance(done_marker, str) or not done_marker):
            problems.append(f"{where}.done_marker must be a suffix such as \".done\"")
        options: dict[str, Any] = {}
        if kind == "sftp":
            for key in ("host", "user", "known_hosts", "key_file"):
                if not isinstance(table.get(key), str) or not table[key]:
                    problems.append(f"{where}.{key} is required for an sftp source")
            options = {
                "host": table.get("host"), "user": table.get("user"),
                "port": int(_number(table, "port", where, 22, problems, 1)),
                "known_hosts": _resolve(base, table["known_hosts"]) if isinstance(table.get("known_hosts"), str) else None,
                # A bare name is looked up under $CREDENTIALS_DIRECTORY first (systemd LoadCredential).
                "key_file": table.get("key_file"),
                "config_dir": str(base),
                "connect_timeout": _number(table, "connect_timeout", where, 10, problems, 1),
                "io_timeout": _number(table, "io_timeout", where, 30, problems, 1),
            }
            local_path = path  # a remote path, as the server sees it
        else:
            local_path = _resolve(base, path)
        result.append(SourceSettings(
            name=name, kind=kind, path=local_path,
            min_age=_number(table, "min_age", where, 3, problems),
            done_marker=done_marker if isinstance(done_marker, str) else None,
            ignore=tuple(ignore), after=after if after in ("delete", "move") else "delete",
            move_to=(_resolve(base, move_to) if kind == "folder" else move_to) if isinstance(move_to, str) else None,
            polling=bool(table.get("polling", False)),
            interval=_number(table, "interval", where, 60 if kind == "sftp" else 30, problems, 0.2),
            options=options))
    return result


def daemon(data: dict[str, Any], base: Path, state_path: Path | None, problems: list[str]) -> dict[str, Any]:
    table = data.get("daemon", {})
    if not isinstance(table, dict):
        problems.append("[daemon] must be a table")
        table = {}
    for key in table:
        if key not in DAEMON_KEYS:
            problems.append(f"daemon.{key}: unknown key (known: {', '.join(sorted(DAEMON_KEYS))})")
    spool = table.get("spool")
    default_spool = (state_path.parent / "spool") if state_path else base / "var" / "spool"
    return {
        "rescan": _number(table, "rescan", "daemon", 30, problems, 0.2),
        "deliver_patience": _number(table, "deliver_patience", "daemon", 5, problems),
        "deactivate_after": _number(table, "deactivate_after", "daemon", 300, problems),
        "spool": Path(_resolve(base, spool)) if isinstance(spool, str) else default_spool,
    }
