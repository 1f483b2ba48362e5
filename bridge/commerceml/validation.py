"""Schema checks that run inside the reader's single streaming pass.

* ``RecordValidator`` checks each record subtree against our own XSD (the
  tolerant one by default, the spec-like one with --strict). libxml2 gives the
  exact line of every violation, and one bad record never hides the next.
* ``StreamingUserValidation`` validates the whole file against an XSD the user
  supplies (e.g. the official 2.10 one) while lxml parses it. libxml2's
  streaming validator reports line 0, so when it fails we run a diagnostic
  pass to name the lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from lxml import etree

from bridge.commerceml.build import local
from bridge.commerceml.problems import ERROR, WARNING, plain_names, reword
from bridge.commerceml.schema import (
    RECORD_ELEMENTS, diagnose_with_user_schema, load_record_schema, load_user_schema,
)


class _Reporter(Protocol):
    def report(self, severity: str, line: int, path: str, message: str) -> None: ...


def ancestor_path(element: etree._Element) -> str:
    """Path of an element's ancestors by local name (containers are never repeated)."""
    parts: list[str] = []
    node = element.getparent()
    while node is not None:
        parts.append(local(node.tag))
        node = node.getparent()
    return "/" + "/".join(reversed(parts))


def record_path(element: etree._Element, index: int) -> str:
    return f"{ancestor_path(element)}/{local(element.tag)}[{index}]"


def relative_path(element: etree._Element, ancestor: etree._Element | None) -> str:
    """'/Цены/Цена[2]/ЦенаЗаЕдиницу' from ``ancestor`` (None: the root, included) down to ``element``."""
    parts: list[str] = []
    node = element
    while node is not None and node is not ancestor:
        parent = node.getparent()
        name = local(node.tag)
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts)) if parts else ""


class RecordValidator:
    def __init__(self, level: str, namespace: str | None, reporter: _Reporter) -> None:
        self.schema = load_record_schema(level, namespace)
        self.severity = ERROR if level == "strict" else WARNING
        self.reporter = reporter

    def check(self, element: etree._Element, index: int) -> None:
        if local(element.tag) not in RECORD_ELEMENTS:
            return
        if self.schema.validate(element):
            return
        base = record_path(element, index)
        for entry in self.schema.error_log:
            inner = plain_names(entry.path or "")
            # libxml2 names the path from the record itself: drop its first step.
            rest = inner.split("/", 2)[2] if inner.count("/") >= 2 else ""
            self.reporter.report(self.severity, entry.line or element.sourceline or 0,
                                 base + ("/" + rest if rest else ""), reword(entry.message))


class StreamingUserValidation:
    def __init__(self, xsd: Path, namespace: str | None) -> None:
        self.xsd = xsd
        self.namespace = namespace
        self.schema = load_user_schema(xsd, namespace)

    @staticmethod
    def owns(exc: etree.XMLSyntaxError) -> bool:
        """True when the parse failed only because the schema was violated."""
        entries = list(exc.error_log)
        return bool(entries) and all(e.domain_name == "SCHEMASV" for e in entries
                                     if e.level_name in ("ERROR", "FATAL"))

    def problems(self, exc: etree.XMLSyntaxError, xml_path: Path) -> list[tuple[int, str, str]]:
        raw = [e for e in exc.error_log if e.domain_name == "SCHEMASV"]
        if raw and all(e.line for e in raw):
            return [(e.line, plain_names(e.path or ""), reword(e.message)) for e in raw]
        located = diagnose_with_user_schema(self.xsd, xml_path, self.namespace)
        if located:
            return [(line, path, reword(message)) for line, path, message in located]
        return [(e.line, plain_names(e.path or ""), reword(e.message)) for e in raw]
