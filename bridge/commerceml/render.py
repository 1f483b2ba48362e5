"""Write CommerceML for 1C: Jinja templates, checked before anything is published.

Outgoing XML is a template, not code, because every 1C configuration wants it
a little differently (namespace, version, a Контейнер wrapper, requisites).
Templates are autoescaped, undefined names are errors, XML-illegal
characters are stripped from every value, and the rendered document must pass
our own reader and schema before it may be written.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
from lxml import etree
from markupsafe import Markup

from bridge.commerceml.build import local
from bridge.commerceml.build import text as element_text
from bridge.commerceml.encoding import EncodingGuard, sniff
from bridge.commerceml.problems import Problem, StructuralError
from bridge.commerceml.reader import KNOWN_NAMESPACE, ROOT, FileReader
from bridge.commerceml.schema import load_record_schema
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
    if type(value) is str:  # nearly every value: the cheap test first
        # isprintable() is False for every character _ILLEGAL matches (controls, surrogates,
        # non-characters), so a printable string needs no regex; tab/LF/CR fall through to it.
        return value if value.isprintable() else _ILLEGAL.sub("", value)
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


# The filters return plain str, not Markup: autoescape passes a plain str through markupsafe's
# C fast path, whereas a Markup value is unwrapped and re-wrapped in Python (twice the cost).
# Their output (digits, dot, minus) is the same either way.
def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def money(value: Any) -> str:
    return format(_decimal(value).quantize(_CENT, ROUND_HALF_UP), "f")


def price(value: Any) -> str:
    """A unit price: 2 decimals, more only when the price has them (0.125 stays 0.125), so that
    ЦенаЗаЕдиницу x Количество - Скидки still gives the line's Сумма."""
    number = _decimal(value)
    cents = number.quantize(_CENT, ROUND_HALF_UP)
    return format(cents if cents == number else number.normalize(), "f")


def quantity(value: Any) -> str:
    return format(_decimal(value).normalize(), "f")


class Renderer:
    def __init__(self, template_dir: Path | None = None) -> None:
        # Integrators' folder first: a template there overrides the built-in one of the same name.
        folders = [str(template_dir)] if template_dir is not None and Path(template_dir).is_dir() else []
        folders.append(str(data_dir("templates")))
        # Sandboxed: a template is text an integrator edits, not code; it must not reach Python
        # (cycler.__init__.__globals__.os...) and read the CRM secret or run commands as the bridge.
        self.env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(folders), autoescape=True, undefined=jinja2.StrictUndefined,
            finalize=clean, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        self.env.filters["money"] = money
        self.env.filters["qty"] = quantity
        self.env.filters["price"] = price

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
    """Read a rendered file (or its bytes) back through our reader and schema; any problem refuses it.

    Bytes that pass the quick in-memory check are sound by the reader's own rules; only the
    others are read (which is slower, but names the line, path and reason of each problem).
    """
    if data is not None and _plainly_sound(data, expect_documents):
        return []
    reader = FileReader(path, path.name, build=False, data=data)
    for _ in reader.records():
        pass
    problems = list(reader.problems)
    if not problems and expect_documents is not None and reader.counts["documents"] != expect_documents:
        problems.append(Problem("error", path.name, 0, "/КоммерческаяИнформация", f"expected {expect_documents} "
                                f"document(s), the template produced {reader.counts['documents']}"))
    return problems


# Our own document (one order) is parsed in memory, hardened as the reader is (no DTD, no
# entities, no network), with comments and PIs dropped as the reader drops them. lxml
# serialises the use of one parser, so threads may share it.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_comments=True, remove_pis=True)
# UTF-8 Cyrillic (a lead byte and a continuation byte): the evidence EncodingGuard weighs
# against a single-byte declaration.
_UTF8_PAIR = re.compile(rb"[\xd0\xd1][\x80-\xbf]")


def _plainly_sound(data: bytes, expect_documents: int | None) -> bool:
    """True only if the reader would find no problem at all in ``data``; False: let it judge.

    The reader streams, tracks paths and builds messages: for a document we have just made,
    one in-memory parse and one schema pass per Документ reach the same verdict for half
    the cost. Every rule the reader applies to a document of orders is applied here;
    anything else (sections, records outside a Документ) is left to the reader, which also
    words every refusal (line, path, reason).
    """
    try:
        info = sniff(data)  # a BOM against the declaration, a DOCTYPE
    except StructuralError:
        return False
    # The reader's guard weighs the bytes chunk by chunk; without one UTF-8-looking pair
    # it cannot object, however they are chunked.
    if EncodingGuard(info).active and _UTF8_PAIR.search(data):
        return False
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError:
        return False
    name = etree.QName(root)
    if root.getroottree().docinfo.doctype or name.localname != ROOT or not root.get("ВерсияСхемы") \
            or (name.namespace and not name.namespace.startswith(KNOWN_NAMESPACE)):
        return False  # the reader refuses or warns
    documents: list[etree._Element] = []
    for child in root:
        tag = local(child.tag)
        if tag == "Документ":
            documents.append(child)
        elif tag == "Контейнер" and all(local(c.tag) == "Документ" for c in child):
            documents.extend(child)
        else:
            return False
    # The reader counts and checks every Документ, at any depth.
    if len(documents) != sum(1 for _ in root.iter("{*}Документ")) or \
            (expect_documents is not None and len(documents) != expect_documents):
        return False
    # The schema does not require an Ид, the reader does. The Документ type has no wildcard,
    # so a valid Документ holds nothing the reader would check as a record of its own.
    schema = load_record_schema("tolerant", name.namespace)
    return all(element_text(d.find("{*}Ид")) is not None and schema.validate(d) for d in documents)


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
