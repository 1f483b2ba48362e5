"""The ``[crm]`` table of a Bitrix24 target, checked up front, and the webhook URL it points at.

The incoming-webhook URL is ``https://<portal>/rest/<user>/<secret>/``: whoever
holds it can write to the CRM, so it never comes from the configuration file
(``bridge.config`` refuses that) but from an environment variable or a
systemd credential, and every message that could carry it goes through
``Webhook.redact`` first.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.errors import UserError

DEFAULT_ENV = "BITRIX24_WEBHOOK_URL"
_PATH = re.compile(r"^/rest/(?P<user>\d+)/(?P<secret>[^/]+)/?$")
# Keys of [crm] this adapter reads; anything else is a typo worth reporting.
KNOWN_KEYS = {
    "kind", "webhook_url_env", "webhook_url_credential", "batch_size", "rate_limit", "burst", "timeout",
    "max_wait", "backoff", "currency", "originator", "requisite_preset_company", "requisite_preset_person",
    "sku_property", "barcode_property", "deal_data_field", "knowledge_ttl", "iblock_id", "offers_iblock_id",
    "price_types", "warehouses", "stages",
}


@dataclass(frozen=True, slots=True)
class Webhook:
    """The portal's REST base URL with the secret in it; ``str()`` and ``repr()`` never show the secret."""

    base: str  # ends with "/"
    user_id: int
    secret: str

    def url(self, method: str) -> str:
        return f"{self.base}{method}"

    @property
    def host(self) -> str:
        return urlsplit(self.base).netloc

    def redact(self, text: object) -> str:
        """``text`` with the secret replaced, wherever it appears (URLs in exception texts included)."""
        return str(text).replace(self.secret, "***") if self.secret else str(text)

    def __str__(self) -> str:
        return self.redact(self.base)

    __repr__ = __str__

    @classmethod
    def parse(cls, url: str, origin: str) -> Webhook:
        """Check the shape of an incoming-webhook URL; ``origin`` says where it came from, for messages."""
        url = url.strip()
        parts = urlsplit(url)
        match = _PATH.match(parts.path)
        if not parts.netloc or match is None or parts.query or parts.fragment:
            # The URL itself is not shown: a malformed one may still hold the secret.
            raise UserError(f"{origin} is not a Bitrix24 incoming-webhook URL "
                            "(expected https://<portal>/rest/<user id>/<secret>/)")
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname or "")):
            raise UserError(f"{origin} must be an https:// URL (plain http is allowed only for a local test portal)")
        base = f"{parts.scheme}://{parts.netloc}/rest/{match['user']}/{match['secret']}/"
        return cls(base=base, user_id=int(match["user"]), secret=match["secret"])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class Settings:
    webhook: Webhook
    batch_size: int = 1000  # bridge operations per apply(); see docs/bitrix24.md for why this large
    rate_limit: float = 2.0  # requests per second the portal's leaky bucket drains (Enterprise: 5)
    burst: int = 50  # the bucket's size (Enterprise: 250)
    timeout: float = 30.0  # seconds for one HTTP request
    max_wait: float = 120.0  # how long one request may be held back by 503/429 before giving up
    backoff: float = 1.0  # first pause after a 429 / per-command limit error, doubled each time
    currency: str = "RUB"  # for prices and inventory documents when 1C names none
    originator: str = "bridge-1c"  # originatorId marking the CRM items this bridge owns
    requisite_preset_company: int = 1  # "Организация" on a Russian portal
    requisite_preset_person: int = 2  # "ИП"
    sku_property: str | None = None  # "property123" or a property CODE such as "ARTNUMBER"
    barcode_property: str | None = None
    deal_data_field: str | None = "UF_CRM_BRIDGE_1C"  # a string user field holding the 1C facts as JSON
    knowledge_ttl: float = 600.0  # seconds the adapter trusts prices/stock it read or wrote itself
    iblock_id: int | None = None  # the product catalog's info block; found through catalog.catalog.list
    offers_iblock_id: int | None = None
    price_types: dict[str, str] = field(default_factory=dict)  # 1C name -> portal name
    warehouses: dict[str, str] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)  # bridge stage -> portal STAGE_ID

    @classmethod
    def from_table(cls, table: dict[str, Any], *, environ: dict[str, str] | None = None) -> Settings:
        """Read ``[crm]``; every problem at once in one UserError."""
        environ = dict(os.environ) if environ is None else environ
        problems: list[str] = []
        for key in table:
            if key not in KNOWN_KEYS:
                problems.append(f"crm.{key}: unknown key for Bitrix24 (known: {', '.join(sorted(KNOWN_KEYS))})")
        values: dict[str, Any] = {}

        def number(key: str, kind: type, low: float, high: float | None = None) -> None:
            if key not in table:
                return
            value = table[key]
            ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
            if not ok or value < low or (high is not None and value > high):
                span = f"from {low}" + (f" to {high}" if high is not None else "")
                problems.append(f"crm.{key} must be {'a number' if kind is float else 'an integer'} {span}")
                return
            values[key] = kind(value)

        number("batch_size", int, 1, 10_000)
        number("rate_limit", float, 0.01)
        number("burst", int, 1)
        number("timeout", float, 0.1)
        number("max_wait", float, 0)
        number("backoff", float, 0)
        number("knowledge_ttl", float, 0)
        number("requisite_preset_company", int, 1)
        number("requisite_preset_person", int, 1)
        number("iblock_id", int, 1)
        number("offers_iblock_id", int, 1)
        for key in ("currency", "originator", "sku_property", "barcode_property", "deal_data_field"):
            if key in table:
                if not isinstance(table[key], str) or (key in ("currency", "originator") and not table[key].strip()):
                    problems.append(f"crm.{key} must be a string")
                else:
                    values[key] = table[key].strip() or None
        for key in ("price_types", "warehouses", "stages"):
            mapping = table.get(key, {})
            if not isinstance(mapping, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in mapping.items()):
                problems.append(f"[crm.{key}] must be a table of names: \"name in 1C\" = \"name in Bitrix24\"")
            else:
                values[key] = {k: v.strip() for k, v in mapping.items()}
        webhook = _webhook(table, environ, problems)
        if problems:
            raise UserError("the Bitrix24 settings have problems:\n  " + "\n  ".join(problems))
        assert webhook is not None
        return cls(webhook=webhook, **values)


def _webhook(table: dict[str, Any], environ: dict[str, str], problems: list[str]) -> Webhook | None:
    """The URL from ``webhook_url_credential`` (systemd LoadCredential) or the ``webhook_url_env`` variable."""
    credential = table.get("webhook_url_credential")
    env_name = table.get("webhook_url_env", DEFAULT_ENV)
    if credential is not None:
        if not isinstance(credential, str) or not credential or "/" in credential or credential in (".", ".."):
            problems.append("crm.webhook_url_credential must be a credential name (a file name, no '/')")
            return None
        folder = environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            problems.append(f"crm.webhook_url_credential = {credential!r}, but $CREDENTIALS_DIRECTORY is not set "
                            "(run under systemd with LoadCredential=, or use webhook_url_env)")
            return None
        path = Path(folder) / credential
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"cannot read the webhook credential {path}: {exc.strerror}")
            return None
        origin = f"the credential {credential!r}"
    else:
        if not isinstance(env_name, str) or not env_name:
            problems.append("crm.webhook_url_env must name an environment variable")
            return None
        text = environ.get(env_name, "")
        if not text.strip():
            problems.append(f"the environment variable {env_name} (crm.webhook_url_env) holding the Bitrix24 "
                            "incoming-webhook URL is not set")
            return None
        origin = f"${env_name}"
    try:
        return Webhook.parse(text, origin)
    except UserError as exc:
        problems.append(str(exc))
        return None
