"""The ``[orders]``, ``[outgoing]`` and ``[statuses]`` parts of the configuration (CRM -> 1C)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.commerceml.render import ENCODINGS, PROFILES
from bridge.config_sources import _SFTP, _number, _resolve

STATUS_FACTS = ("posted", "paid", "shipped", "cancelled", "deleted")
_ORDERS = {"trigger_stages", "organisation", "warehouse", "currency"}
_OUTGOING = {"kind", "path", "profile", "template_dir", "encoding", "file_name"} | (_SFTP - {"kind"})


@dataclass(slots=True)
class OrdersConfig:
    trigger_stages: list[str]
    organisation: str | None
    warehouse: str | None
    currency: str
    target_kind: str
    path: str
    profile: str
    template_dir: Path | None
    encoding: str
    file_name: str
    sftp: dict[str, Any] = field(default_factory=dict)


def orders(data: dict[str, Any], base: Path, problems: list[str]) -> OrdersConfig | None:
    table, out = data.get("orders"), data.get("outgoing")
    if table is None and out is None:
        return None
    if not isinstance(table, dict) or not isinstance(out, dict):
        problems.append("[orders] and [outgoing] go together: orders need a place to be written to")
        return None
    for key in table:
        if key not in _ORDERS:
            problems.append(f"orders.{key}: unknown key (known: {', '.join(sorted(_ORDERS))})")
    for key in out:
        if key not in _OUTGOING:
            problems.append(f"outgoing.{key}: unknown key (known: {', '.join(sorted(_OUTGOING))})")
    stages = table.get("trigger_stages", [])
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) and s for s in stages):
        problems.append("orders.trigger_stages must list at least one CRM stage")
        stages = []
    kind = out.get("kind", "folder")
    if kind not in ("folder", "sftp"):
        problems.append(f"outgoing.kind: unknown kind '{kind}' (known: folder, sftp)")
    path = out.get("path")
    if not isinstance(path, str) or not path:
        problems.append("outgoing.path must be a folder")
        path = "."
    profile = out.get("profile", "ut11")
    if profile not in PROFILES:
        problems.append(f"outgoing.profile: unknown profile '{profile}' (known: {', '.join(PROFILES)})")
    encoding = out.get("encoding", "utf-8-bom")
    if encoding not in ENCODINGS:
        problems.append(f"outgoing.encoding: unknown encoding '{encoding}' (known: {', '.join(ENCODINGS)})")
    file_name = out.get("file_name", "orders-{id}.xml")
    if not isinstance(file_name, str) or "/" in file_name or not file_name.endswith(".xml"):
        problems.append("outgoing.file_name must be a file name ending in .xml, e.g. \"orders-{id}.xml\"")
        file_name = "orders-{id}.xml"
    else:
        try:
            file_name.format(id="x", number="1", deal="1")
        except (KeyError, IndexError, ValueError):
            problems.append("outgoing.file_name may use {id} (the order Ид), {number} and {deal} only")
    template_dir = out.get("template_dir")
    sftp: dict[str, Any] = {}
    if kind == "sftp":
        for key in ("host", "user", "known_hosts", "key_file"):
            if not isinstance(out.get(key), str) or not out[key]:
                problems.append(f"outgoing.{key} is required for an sftp target")
        sftp = {"host": out.get("host"), "user": out.get("user"), "port": int(_number(out, "port", "outgoing", 22, problems, 1)),
                "known_hosts": _resolve(base, out["known_hosts"]) if isinstance(out.get("known_hosts"), str) else None,
                "key_file": out.get("key_file"), "config_dir": str(base),
                "connect_timeout": _number(out, "connect_timeout", "outgoing", 10, problems, 1),
                "io_timeout": _number(out, "io_timeout", "outgoing", 30, problems, 1)}
    return OrdersConfig(
        trigger_stages=stages, organisation=table.get("organisation"), warehouse=table.get("warehouse"),
        currency=str(table.get("currency", "RUB")), target_kind=kind,
        path=_resolve(base, path) if kind == "folder" else path, profile=profile,
        template_dir=Path(_resolve(base, template_dir)) if isinstance(template_dir, str) else None,
        encoding=encoding, file_name=file_name, sftp=sftp)


def statuses(data: dict[str, Any], problems: list[str]) -> dict[str, str]:
    table = data.get("statuses", {})
    if not isinstance(table, dict):
        problems.append("[statuses] must be a table of 1C fact = CRM stage")
        return {}
    for key, value in table.items():
        if key not in STATUS_FACTS:
            problems.append(f"statuses.{key}: unknown fact (known: {', '.join(STATUS_FACTS)})")
        elif not isinstance(value, str) or not value:
            problems.append(f"statuses.{key} must name a CRM stage")
    return {k: v for k, v in table.items() if k in STATUS_FACTS and isinstance(v, str)}


