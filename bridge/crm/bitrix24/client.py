"""HTTP to one portal: ``batch`` requests, the rate limit, backoff and error mapping.

Everything goes through ``batch`` (up to 50 commands a request): the portal
limits requests, not commands, so one request that carries 50 commands is
worth 50 single calls.

Why no retry library (tenacity): the decision to resend depends on whether
the portal may have executed the request, and the waiting is shared with the
leaky bucket; three explicit branches below say that more plainly than a
retry policy object would.

* 503 QUERY_LIMIT_EXCEEDED and 429 OPERATION_TIME_LIMIT: the portal refused the
  request before running it, so the very same request is sent again after
  the wait (nothing lost, nothing done twice), for up to ``max_wait`` seconds.
* A connection that could not be opened: nothing was sent; tried again twice.
* A timeout, a broken connection or a 5xx once the request was sent: it may
  or may not have run. It is never resent here: ``MaybeApplied`` tells the
  adapter to forget what it believed about the records involved.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from bridge.crm.bitrix24.ratelimit import LeakyBucket
from bridge.crm.bitrix24.settings import Settings, Webhook
from bridge.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

MAX_COMMANDS = 50  # the portal's limit per batch
LIMIT_ERRORS = {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"}  # refused before running: safe to resend
AUTH_ERRORS = {"NO_AUTH_FOUND", "INVALID_CREDENTIALS", "invalid_token", "expired_token", "insufficient_scope",
               "WRONG_AUTH_TYPE", "ACCESS_DENIED", "PAYMENT_REQUIRED", "OVERLOAD_LIMIT"}
# Of those, the ones a single command of a batch may get: about the webhook, never about one record
# (ACCESS_DENIED may be about one record: a deal in a pipeline the webhook's user cannot see).
WEBHOOK_ERRORS = AUTH_ERRORS - {"ACCESS_DENIED", "OVERLOAD_LIMIT"}
_CONNECT_TRIES = 3


class MaybeApplied(TransientError):
    """The request was sent and its fate is unknown: it may have been carried out."""


@dataclass(slots=True)
class BatchAnswer:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (code, description)
    totals: dict[str, int] = field(default_factory=dict)
    nexts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, result: Any) -> BatchAnswer:
        if not isinstance(result, dict):
            raise PermanentError("Bitrix24 answered a batch without its result object")

        def table(name: str) -> dict[str, Any]:
            value = result.get(name)
            # PHP encodes an empty associative array as [], a filled one as {}.
            return value if isinstance(value, dict) else {}

        errors = {}
        for key, error in table("result_error").items():
            if isinstance(error, dict):
                errors[key] = (str(error.get("error", "ERROR")), str(error.get("error_description", "")))
            else:
                errors[key] = ("ERROR", str(error))
        return cls(results=table("result"), errors=errors,
                   totals={k: int(v) for k, v in table("result_total").items() if _intlike(v)},
                   nexts={k: int(v) for k, v in table("result_next").items() if _intlike(v)})


def _intlike(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.isdigit())


def php_query(params: dict[str, Any]) -> str:
    """``params`` as the PHP-style query string a batch command carries (``fields[name]=...``)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        _flatten(value, str(key), pairs)
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)


def _flatten(value: Any, prefix: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append((prefix, ""))
        for key, item in value.items():
            _flatten(item, f"{prefix}[{key}]", out)
    elif isinstance(value, (list, tuple)):
        if not value:  # a query string has no empty array; the portal reads "" as one
            out.append((prefix, ""))
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
    elif value is None:
        out.append((prefix, ""))
    elif isinstance(value, bool):
        out.append((prefix, "Y" if value else "N"))
    elif isinstance(value, float):
        out.append((prefix, format(Decimal(repr(value)), "f")))
    elif isinstance(value, Decimal):
        out.append((prefix, format(value, "f")))
    else:
        out.append((prefix, str(value)))


class _RedactHttpLogs(logging.Filter):
    """httpx logs every request URL at INFO; the webhook secret is in that URL."""

    secrets: set[str] = set()
    _lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            for secret in self.secrets:
                text = text.replace(secret, "***")
            record.msg, record.args = text, None
        return True


_REDACTOR = _RedactHttpLogs()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_REDACTOR)


@dataclass(slots=True)
class Counters:
    requests: int = 0  # HTTP requests sent, refused ones included
    commands: int = 0  # commands in requests the portal accepted
    refused: int = 0  # 503/429 answers
    waited: float = 0.0  # seconds spent waiting for the bucket or a backoff


class Client:
    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.webhook: Webhook = settings.webhook
        self.settings = settings
        self._clock, self._sleep = clock, sleep
        self.bucket = LeakyBucket(settings.rate_limit, settings.burst, clock=clock, sleep=sleep)
        self.counters = Counters()
        self._http = httpx.Client(timeout=httpx.Timeout(settings.timeout), transport=transport,
                                  follow_redirects=False, headers={"Accept": "application/json"})
        with _RedactHttpLogs._lock:
            _RedactHttpLogs.secrets.add(self.webhook.secret)

    def close(self) -> None:
        # The secret stays in the redaction set: another client of this process may use the same
        # webhook, and a secret once known costs nothing to keep hiding.
        self._http.close()

    def batch(self, commands: Iterable[tuple[str, str, dict[str, Any]]]) -> BatchAnswer:
        """Run ``(key, method, params)`` commands in one request (halt=0: each stands alone)."""
        cmd = {key: f"{method}?{php_query(params)}" for key, method, params in commands}
        if not cmd or len(cmd) > MAX_COMMANDS:
            raise ValueError(f"a batch takes 1 to {MAX_COMMANDS} commands, not {len(cmd)}")
        answer = BatchAnswer.parse(self._post("batch", {"halt": 0, "cmd": cmd}, len(cmd)))
        for code, description in answer.errors.values():
            if code in WEBHOOK_ERRORS:
                # The webhook itself is refused (a scope taken away, a token expired), not this command's
                # record: failing each operation for good would drop the whole outbox until 1C sends it
                # all again. The apply fails instead, and its operations wait until the webhook is fixed.
                raise PermanentError(f"Bitrix24 portal {self.webhook.host} refused a command of the webhook "
                                     f"({code}: {self.webhook.redact(description)}): check that the incoming "
                                     "webhook is active and has the crm and catalog scopes")
        return answer

    def _post(self, method: str, body: dict[str, Any], commands: int) -> Any:
        redact = self.webhook.redact
        first = self._clock()
        backoff = self.settings.backoff
        connect_failures = refusals = 0
        while True:
            self.counters.waited += self.bucket.acquire()
            self.counters.requests += 1
            try:
                response = self._http.post(self.webhook.url(method), json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                connect_failures += 1
                if connect_failures >= _CONNECT_TRIES:
                    raise TransientError(f"Bitrix24 portal {self.webhook.host} is unreachable: "
                                         f"{redact(exc) or type(exc).__name__}") from None
                self._pause(backoff * connect_failures)
                continue
            except httpx.HTTPError as exc:
                raise MaybeApplied(f"Bitrix24 portal {self.webhook.host}: {type(exc).__name__}: "
                                   f"{redact(exc)} (the request may have been carried out)") from None
            error, description = _error_of(response)
            status = response.status_code
            if error in LIMIT_ERRORS or status in (429, 503):
                self.counters.refused += 1
                if status == 503 or error == "QUERY_LIMIT_EXCEEDED":
                    # Someone else shares the portal's bucket (or the limits are set too high): count it as
                    # full, and wait longer each time it happens again in a row.
                    self.bucket.saturate()
                    refusals += 1
                    pause = min(max(1.0 / self.settings.rate_limit, backoff) * 2 ** (refusals - 1), 10.0)
                else:
                    pause = _retry_after(response) or backoff
                    backoff = min(max(backoff * 2, 0.05), 30.0)
                if self._clock() + pause - first > self.settings.max_wait:
                    raise TransientError(f"Bitrix24 kept refusing requests for {self.settings.max_wait:.0f} s "
                                         f"(HTTP {status} {error}: {redact(description)})")
                log.warning("bitrix24.throttled status=%d error=%s pause=%.2f", status, error, pause)
                self._pause(pause)
                continue
            if status in (401, 403) or error in AUTH_ERRORS:
                raise PermanentError(f"Bitrix24 portal {self.webhook.host} refused the webhook (HTTP {status} "
                                     f"{error or ''}: {redact(description)}): check that the incoming webhook "
                                     "exists, is active and has the crm and catalog scopes")
            if status >= 500:
                raise MaybeApplied(f"Bitrix24 portal {self.webhook.host} failed: HTTP {status} "
                                   f"{error or ''} {redact(description)} (the request may have been carried out)")
            if status != 200 or error:
                raise PermanentError(f"Bitrix24 portal {self.webhook.host} refused the request: HTTP {status} "
                                     f"{error or ''}: {redact(description)}")
            data = _json(response)
            if not isinstance(data, dict) or "result" not in data:
                raise MaybeApplied(f"Bitrix24 portal {self.webhook.host} answered without a result "
                                   "(the request may have been carried out)")
            self.counters.commands += commands
            log.debug("bitrix24.batch commands=%d status=%d", commands, status)
            return data["result"]

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.counters.waited += seconds
            self._sleep(seconds)


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    data = _json(response)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"]), str(data.get("error_description", ""))
    return None, "" if response.status_code == 200 else response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    try:
        value = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if 0 <= value <= 600 else None
