"""Write CommerceML for 1C: Jinja templates, checked before anything is published.

Outgoing XML is a template, not code, because every 1C configuration wants it
a little differently (namespace, version, a Контейнер wrapper, requisites).
Templates are autoescaped, undefined names are errors, XML-illegal
characters are stripped from every value, and the rendered document is read
back through our own reader and schema before it may be written.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bridge.commerceml.problems import Problem
from bridge.commerceml.reader import FileReader
from bridge.errors import UserError
from bridge.resources import data_dir

PROFILES = {"ut11": "orders-ut11.xml.j2", "unf": "orders-unf.xml.j2", "bitrix-module": "orders-bitrix-module.xml.j2"}
ENCODINGS = {"utf-8-bom": ("UTF-8", "utf-8", True), "utf-8": ("UTF-8", "utf-8", False),
             "windows-1251": ("windows-1251", "cp1251", False)}
# Characters XML 1.0 forbids (C0 controls but tab/LF/CR, surrogates, U+FFFE/FFFF): a CRM
# comment pasted from a PDF can carry them, and 1C refuses the whole file for one of them.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class RenderError(UserError):
    """A template or the document it produced is wrong; nothing was written."""


def clean(value: Any) -> Any:
    """Jinja's finalize: every value printed into XML passes here."""
    if isinstance(value, Markup):  # a macro's output: built from values that passed here already
        return value
    if isinstance(value, str):
        return _ILLEGAL.sub("", value) if _ILLEGAL.search(value) else value
    if isinstance(value, Decimal):
        return format(value, "f")
    if value is None:
        return ""
    return value


_CENT = Decimal("0.01")


def money(value: Any) -> Markup:
    # Digits and a dot need no escaping: saying so (Markup) spares autoescape the work.
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return Markup(format(number.quantize(_CENT, rounding=ROUND_HALF_UP), "f"))


def quantity(value: Any) -> Markup:
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return Markup(format(number.normalize(), "f"))


class Renderer:
    def __init__(self, template_dir: Path | None = None) -> None:
        # Integrators' folder first: a template there overrides the built-in one of the same name.
        folders = [str(template_dir)] if template_dir is not None and Path(template_dir).is_dir() else []
        folders.append(str(data_dir("templates")))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folders), autoescape=True, undefined=jinja2.StrictUndefined,
            finalize=clean, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        self.env.filters["money"] = money
        self.env.filters["qty"] = quantity

    def render(self, profile: str, context: dict[str, Any]) -> str:
        name = PROFILES.get(profile, profile)
        try:
            template = self.env.get_template(name)
            return template.render(**context)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"template {exc.filename or exc.name}:{exc.lineno}: {exc.message}") from None
        except jinja2.TemplateNotFound:
            raise RenderError(f"no template {name} (profiles: {', '.join(PROFILES)})") from None
        except Exception as exc:  # undefined names, bad filters: name the template line that failed
            raise RenderError(f"{_template_position(exc, name)}: {type(exc).__name__}: {exc}") from None


def _template_position(exc: BaseException, name: str) -> str:
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename and frame.filename.endswith((".j2", ".xml")):
            return f"template {frame.filename}:{frame.lineno}"
    return f"template {name}"


def encode(text: str, encoding: str) -> bytes:
    """The declaration, then the text in the target's encoding (characters windows-1251
    lacks become character references, which every XML reader understands)."""
    if encoding not in ENCODINGS:
        raise RenderError(f"unknown encoding {encoding} (known: {', '.join(ENCODINGS)})")
    declared, codec, bom = ENCODINGS[encoding]
    body = f'<?xml version="1.0" encoding="{declared}"?>\n' + text.lstrip("\ufeff").lstrip()
    data = body.encode(codec, errors="xmlcharrefreplace")
    return (b"\xef\xbb\xbf" + data) if bom else data


def check(path: Path, *, expect_documents: int | None = None, data: bytes | None = None) -> list[Problem]:
    """Read a rendered file (or its bytes) back through our reader and schema; any problem refuses it."""
    reader = FileReader(path, path.name, build=False, data=data)
    for _ in reader.records():
        pass
    problems = list(reader.problems)
    if not problems and expect_documents is not None and reader.counts["documents"] != expect_documents:
        problems.append(Problem("error", path.name, 0, "/КоммерческаяИнформация", f"expected {expect_documents} "
                                f"document(s), the template produced {reader.counts['documents']}"))
    return problems


def render_checked(renderer: Renderer, profile: str, context: dict[str, Any], encoding: str,
                   writer: Callable[[bytes], None] | None = None) -> bytes:
    """Render, encode and check a document; hand it to ``writer`` only if it is sound."""
    data = encode(renderer.render(profile, context), encoding)
    problems = check(Path(f"{profile}.xml"), expect_documents=len(context.get("orders", [])) or None, data=data)
    if problems:
        details = "; ".join(f"line {p.line}: {p.path}: {p.message}" for p in problems[:5])
        raise RenderError(f"the {profile} template produced a document 1C would not accept: {details}")
    if writer is not None:
        writer(data)
    return data
