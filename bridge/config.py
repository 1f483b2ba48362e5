"""The TOML configuration: loaded once, checked up front, all problems at once.

Relative paths are relative to the configuration file, so a unit file or a
cron job can run the bridge from any folder. Secrets are never read from
here (see ``bridge.secrets``); a key that looks like one is refused.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import config_sources
from bridge.errors import UserError
from bridge.transport.base import SourceSettings

PRODUCT_MATCHES = ("id", "sku", "barcode")
COUNTERPARTY_MATCHES = ("id", "inn_kpp", "inn")
OWNABLE_FIELDS = {
    "product": ("name", "description", "sku", "barcode", "unit", "groups", "properties", "requisites", "images"),
    "company": ("name", "full_name", "addresses", "contacts", "bank_accounts"),
    "contact": ("name", "email", "phone", "addresses"),
}
# Sections other issues define; accepted here so one file serves every version of the bridge.
_LATER_SECTIONS = {"source", "daemon", "orders", "outgoing", "statuses"}
_SECRET_WORDS = ("password", "secret", "token", "webhook", "api_key", "apikey")


class ConfigError(UserError):
    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s) in the configuration:\n  " + "\n  ".join(problems))


@dataclass(slots=True)
class Mapping:
    match_products: list[str] = field(default_factory=lambda: ["id", "sku"])
    match_counterparties: list[str] = field(default_factory=lambda: ["id", "inn_kpp"])
    crm_owned_fields: list[str] = field(default_factory=list)
    max_deactivate_share: float = 0.2

    def owned(self, entity: str) -> list[str]:
        """Fields of ``entity`` ("product", "company", ...) the CRM owns after creation."""
        if not self.crm_owned_fields:  # the usual case, asked once per record of a catalog
            return []
        prefix = entity + "."
        return [f[len(prefix):] for f in self.crm_owned_fields if f.startswith(prefix)]


@dataclass(slots=True)
class Config:
    path: Path
    state_path: Path
    archive_path: Path
    quarantine_path: Path
    crm_kind: str
    crm_path: Path | None
    crm: dict[str, Any]
    mapping: Mapping
    raw: dict[str, Any]
    sources: list[SourceSettings] = field(default_factory=list)
    daemon: dict[str, Any] = field(default_factory=dict)
    orders: Any = None  # bridge.config_orders.OrdersConfig when [orders]/[outgoing] are set
    statuses: dict[str, str] = field(default_factory=dict)  # 1C fact -> CRM stage
    # Retention (sync/retention.py), in days; 0 keeps everything forever.
    archive_keep_days: float = 0.0
    state_keep_days: float = 0.0


class _Checker:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problems.append(f"[{key}] must be a table")
            return {}
        return value

    def path(self, table: dict[str, Any], section: str, key: str, default: str | None) -> Path | None:
        value = table.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problems.append(f"{section}.{key} must be a non-empty path string")
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base / path)

    def days(self, table: dict[str, Any], section: str) -> float:
        """keep_days: a number of days, 0 (the default) for forever."""
        value = table.get("keep_days", 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 100_000:
            self.problems.append(f"{section}.keep_days must be a number of days (0 keeps everything forever)")
            return 0.0
        return float(value)

    def string_list(self, table: dict[str, Any], section: str, key: str, allowed: tuple[str, ...] | None,
                    default: list[str]) -> list[str]:
        value = table.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{section}.{key} must be a list of strings")
            return default
        if allowed is not None:
            for v in value:
                if v not in allowed:
                    self.problems.append(f"{section}.{key}: unknown value '{v}' (known: {', '.join(allowed)})")
        return value

    def unknown(self, table: dict[str, Any], section: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                self.problems.append(f"{section}.{key}: unknown key (known: {', '.join(sorted(known))})")


def load(path: Path) -> Config:
    """Read and check ``path``; raise ConfigError listing every problem with its key path."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"configuration file {path} not found (use -c PATH; samples/bridge.toml is an example)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise UserError(f"cannot read configuration {path}: {exc.strerror}") from None
    check = _Checker(path.resolve().parent)
    for key in data:
        if key not in {"state", "archive", "crm", "mapping"} | _LATER_SECTIONS:
            check.problems.append(f"{key}: unknown section")
    _refuse_secrets(data, "", check.problems)

    state = check.table(data, "state")
    check.unknown(state, "state", {"path", "keep_days"})
    archive = check.table(data, "archive")
    check.unknown(archive, "archive", {"path", "quarantine", "keep_days"})
    crm = check.table(data, "crm")
    kind = crm.get("kind", "sandbox")
    if not isinstance(kind, str):
        check.problems.append("crm.kind must be a string")
        kind = "sandbox"
    from bridge.crm.registry import ADAPTERS  # late: the registry imports every adapter
    if kind not in ADAPTERS:
        check.problems.append(f"crm.kind: unknown CRM '{kind}' (known: {', '.join(sorted(ADAPTERS))})")
    crm_path = check.path(crm, "crm", "path", "var/crm.db") if kind == "sandbox" else None
    if kind == "sandbox":  # other kinds check their own keys (e.g. bridge.crm.bitrix24.settings)
        check.unknown(crm, "crm", {"kind", "path"})

    mapping_table = check.table(data, "mapping")
    check.unknown(mapping_table, "mapping", {"match_products", "match_counterparties", "crm_owned_fields",
                                             "max_deactivate_share"})
    mapping = Mapping(
        match_products=check.string_list(mapping_table, "mapping", "match_products", PRODUCT_MATCHES, ["id", "sku"]),
        match_counterparties=check.string_list(mapping_table, "mapping", "match_counterparties",
                                               COUNTERPARTY_MATCHES, ["id", "inn_kpp"]),
        crm_owned_fields=check.string_list(mapping_table, "mapping", "crm_owned_fields", None, []),
    )
    for owned in mapping.crm_owned_fields:
        entity, _, name = owned.partition(".")
        if name not in OWNABLE_FIELDS.get(entity, ()):
            known = ", ".join(f"{e}.{f}" for e, fields in OWNABLE_FIELDS.items() for f in fields)
            check.problems.append(f"mapping.crm_owned_fields: unknown field '{owned}' (known: {known})")
    if mapping.match_products[:1] != ["id"] or mapping.match_counterparties[:1] != ["id"]:
        check.problems.append("mapping.match_*: the 1C Ид must come first ('id'); other keys only find records "
                              "the bridge does not know yet")
    share = mapping_table.get("max_deactivate_share", 0.2)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        check.problems.append("mapping.max_deactivate_share must be a number from 0 to 1")
    else:
        mapping.max_deactivate_share = float(share)

    state_keep_days = check.days(state, "state")
    archive_keep_days = check.days(archive, "archive")
    state_path = check.path(state, "state", "path", "var/bridge.db")
    archive_path = check.path(archive, "archive", "path", "var/archive")
    quarantine = check.path(archive, "archive", "quarantine", "var/quarantine")
    source_list = config_sources.sources(data, check.base, check.problems)
    daemon = config_sources.daemon(data, check.base, state_path, check.problems)
    from bridge import config_orders  # late: it imports the renderer, which imports the reader
    orders = config_orders.orders(data, check.base, check.problems)
    statuses = config_orders.statuses(data, check.problems)
    if check.problems:
        raise ConfigError(path, check.problems)
    assert state_path and archive_path and quarantine
    return Config(path=path, state_path=state_path, archive_path=archive_path, quarantine_path=quarantine,
                  crm_kind=kind, crm_path=crm_path, crm=crm, mapping=mapping, raw=data, sources=source_list,
                  daemon=daemon, orders=orders, statuses=statuses, archive_keep_days=archive_keep_days,
                  state_keep_days=state_keep_days)


def _refuse_secrets(data: dict[str, Any], prefix: str, problems: list[str]) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _refuse_secrets(value, dotted + ".", problems)
        elif isinstance(value, str) and any(w in key.lower() for w in _SECRET_WORDS) \
                and not key.lower().endswith(("_env", "_file", "_credential")):
            problems.append(f"{dotted}: secrets do not belong in the configuration file; name an environment "
                            f"variable ({key}_env) or a credential file ({key}_credential) instead")
