"""The XML schemas that check CommerceML records, and the diagnostic pass behind them.

Two schemas of our own ship in ``schemas/``:

* ``commerceml-tolerant.xsd`` describes what real 1C exports contain. It accepts every
  real-world deviation we know of and flags what would make data unusable (an empty Ид, a
  price that is not a number, an element nobody knows). Its errors are warnings.
* ``commerceml-strict.xsd`` is close to the 2.10 standard and backs the strict mode.

Both are written without a target namespace: 1C puts the same structure under several
namespaces (none, ``urn:1C.ru:commerceml_2``, ``_205``, ``_210``, ``urn:1C.ru:commerceml_3``),
and the namespace says nothing reliable about the version. So the schema is retargeted, at
load time, to the namespace the file actually uses, and compiled once per namespace.

A user may also bring an XSD of their own (typically the official 2.10 one, whose target
namespace is ``urn:1C.ru:commerceml_2``); :func:`load_user_schema` moves it to the file's
namespace the same way.

libxml2, which validates while we stream, sometimes reports errors with line 0. For those
files :func:`diagnose_with_user_schema` re-runs validation with the ``xmlschema`` library over
a lazy lxml iterparse, which knows every element's line and path.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import xmlschema
from lxml import etree

from bridge.resources import data_dir

__all__ = [
    "RECORD_ELEMENTS",
    "SchemaError",
    "diagnose_with_user_schema",
    "load_record_schema",
    "load_user_schema",
]

#: Local names of the elements the reader validates one at a time, each against the global
#: declaration of the same name in the schema.
RECORD_ELEMENTS: frozenset[str] = frozenset(
    {
        "Группа",
        "Свойство",
        "ТипЦены",
        "Склад",
        "ЕдиницаИзмерения",
        "Товар",
        "Предложение",
        "Контрагент",
        "Документ",
    }
)

_LEVEL_FILES = {
    "tolerant": "commerceml-tolerant.xsd",
    "strict": "commerceml-strict.xsd",
}

_XSD_NS = "http://www.w3.org/2001/XMLSchema"

# Attributes of XSD elements whose values are QNames (or, for memberTypes, lists of them).
# Dropping a target namespace means rewriting the prefixes in these values.
_QNAME_ATTRIBUTES = ("type", "ref", "base", "itemType", "substitutionGroup", "refer")
_QNAME_LIST_ATTRIBUTES = ("memberTypes",)

# The "{uri}" of Clark notation ("{urn:1C.ru:commerceml_2}Товар") in messages and paths.
# A URI has a scheme, hence the colon: a pattern quantifier such as "{3,4}" is left alone.
_CLARK_NS = re.compile(r"\{[^{}\s:]+:[^{}\s]*\}")

# Bounded caches: namespaces come from the files we read, so an unbounded cache would grow
# with whatever a hostile or broken sender puts there.
_CACHE_SIZE = 32


class SchemaError(Exception):
    """An XSD could not be read, retargeted or compiled."""


def load_record_schema(level: str, namespace: str | None) -> etree.XMLSchema:
    """Return our ``level`` schema ("tolerant" or "strict") compiled for ``namespace``.

    ``namespace`` is the namespace of the file's root element; ``None`` (or "") for a file
    without one. The compiled object is cached per (level, namespace). Note that an
    :class:`lxml.etree.XMLSchema` keeps the log of its last validation in ``error_log``,
    so one object should not validate from several threads at once.
    """
    if level not in _LEVEL_FILES:
        raise ValueError(f"unknown schema level {level!r}; expected one of {sorted(_LEVEL_FILES)}")
    return _compile_record_schema(level, namespace or None)


def load_user_schema(path: str | os.PathLike[str], namespace: str | None) -> etree.XMLSchema:
    """Compile a user-supplied XSD, moved to the target namespace ``namespace``.

    The schema's own target namespace is replaced (or removed, for ``namespace=None``)
    together with every namespace declaration bound to it, so references such as
    ``type="cml:Товар"`` follow. Cached by (real path, mtime, namespace), so an edited
    file is picked up without a restart.
    """
    real, mtime_ns = _stat(path)
    return _compile_user_schema(real, mtime_ns, namespace or None)


def diagnose_with_user_schema(
    xsd_path: str | os.PathLike[str],
    xml_path: str | os.PathLike[str],
    namespace: str | None,
    limit: int = 100,
) -> list[tuple[int, str, str]]:
    """Validate ``xml_path`` again to name the line and element of each error.

    Returns up to ``limit`` tuples ``(line, path, reason)``, where ``path`` is made of local
    names, e.g. ``/КоммерческаяИнформация/Каталог/Товары/Товар[3]/Ид``, and namespace URIs
    are stripped from ``reason`` too: the reader is a 1C administrator, not an XML tool.
    A file that stops being well-formed ends the list with one entry saying so.

    The document is read lazily (xmlschema over lxml's iterparse): one child of the root
    (a Классификатор, a Каталог, a Документ...) is held at a time, then emptied. The schema
    is built from the same retargeted text that :func:`load_user_schema` compiles.

    Raises :class:`SchemaError` for an unusable XSD, and lets ``OSError`` or
    ``xmlschema.XMLResourceError`` (e.g. entity declarations refused) through for the file.
    """
    if limit <= 0:
        return []
    namespace = namespace or None
    real, mtime_ns = _stat(xsd_path)
    schema = _xmlschema_user_schema(real, mtime_ns, namespace)
    found: list[tuple[int, str, str]] = []
    try:
        # lazy=True validates one child of the root at a time and then empties it. Deeper
        # lazy levels look types up by path and report false errors in documents, so no.
        resource = xmlschema.XMLResource(
            os.fspath(xml_path),
            lazy=True,
            iterparse=_safe_iterparse,
            allow="local",
            defuse="always",
        )
        prefixes = {p for p, uri in schema.namespaces.items() if p and uri == namespace}
        prefixes.update(p for p, uri in resource.root.nsmap.items() if p and uri == namespace)
        errors = schema.iter_errors(resource)
        try:
            for error in errors:
                line, path = _locate(error)
                reason = _readable(error.reason or error.message, prefixes)
                found.append((line, path, reason))
                if len(found) >= limit:
                    break
        finally:
            errors.close()  # closes the file now, not whenever the generator is collected
    except SyntaxError as err:
        # lxml's XMLSyntaxError is a SyntaxError; xmlschema wraps it in its
        # XMLResourceParseError, also a SyntaxError. Unreadable files are not caught here.
        cause = err.__cause__ if isinstance(err.__cause__, SyntaxError) else err
        line = getattr(cause, "lineno", None) or 0
        found.append((line, "", f"the file is not well-formed XML: {_readable(str(cause), set())}"))
    return found


# --------------------------------------------------------------------------- internals


def _stat(path: str | os.PathLike[str]) -> tuple[str, int]:
    real = os.path.realpath(path)
    try:
        return real, os.stat(real).st_mtime_ns
    except OSError as err:
        raise SchemaError(f"cannot read schema {os.fspath(path)}: {err.strerror}") from err


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_record_schema(level: str, namespace: str | None) -> etree.XMLSchema:
    path = data_dir("schemas") / _LEVEL_FILES[level]
    return _compile(_retarget(path, namespace), path, namespace)


# In the user-schema caches mtime_ns is only part of the key: a changed file is a new entry.
@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_user_schema(real: str, mtime_ns: int, namespace: str | None) -> etree.XMLSchema:
    return _compile(_retargeted_text(real, mtime_ns, namespace), Path(real), namespace)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _retargeted_text(real: str, mtime_ns: int, namespace: str | None) -> str:
    return _retarget(Path(real), namespace)


# xmlschema objects are large and slow to build; only the diagnostic pass needs them.
@functools.lru_cache(maxsize=4)
def _xmlschema_user_schema(real: str, mtime_ns: int, namespace: str | None) -> xmlschema.XMLSchema:
    text = _retargeted_text(real, mtime_ns, namespace)
    try:
        # base_url lets relative includes resolve beside the original file; "sandbox"
        # keeps them inside that folder and off the network.
        return xmlschema.XMLSchema(
            text, base_url=os.path.dirname(real), allow="sandbox", defuse="always"
        )
    except xmlschema.XMLSchemaException as err:
        raise SchemaError(f"schema {real} does not compile: {err}") from err


def _compile(text: str, path: Path, namespace: str | None) -> etree.XMLSchema:
    try:
        # base_url: relative xs:include/xs:import resolve beside the original file.
        document = etree.fromstring(text, _xsd_parser(), base_url=str(path))
        return etree.XMLSchema(document)
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as err:
        where = f" for namespace {namespace}" if namespace else ""
        raise SchemaError(f"schema {path} does not compile{where}: {err}") from err


def _xsd_parser() -> etree.XMLParser:
    # A schema file is input like any other: no entities, no DTD, no network.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )


def _safe_iterparse(source: Any, events: Sequence[str] = ("end",)) -> Iterator[tuple[str, Any]]:
    """lxml's iterparse with the same hardening as the reader (xmlschema calls this)."""
    return etree.iterparse(
        source,
        events=events,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )


def _retarget(path: Path, namespace: str | None) -> str:
    """Return the text of the XSD at ``path`` with its target namespace set to ``namespace``.

    A schema without a target namespace (ours) gets ``targetNamespace`` and a default
    namespace declaration, so its unprefixed references follow it. A schema with one (the
    official XSDs: ``xmlns:cml`` = ``targetNamespace`` = ``urn:1C.ru:commerceml_2``) gets
    every declaration of the old namespace rebound; for ``None``, where a prefix cannot be
    unbound in XML 1.0, the references that use such a prefix lose it instead.
    """
    try:
        root = etree.parse(str(path), _xsd_parser()).getroot()
    except (OSError, etree.XMLSyntaxError) as err:
        raise SchemaError(f"cannot read schema {path}: {err}") from err
    if root.tag != f"{{{_XSD_NS}}}schema":
        raise SchemaError(f"{path} is not an XML Schema (its root is {root.tag})")

    old = root.get("targetNamespace") or None
    # Serialising the root element gives UTF-8-safe text with all root declarations in its
    # start tag, whatever the file's encoding, BOM or prolog.
    text = etree.tostring(root, encoding="unicode")
    if old == namespace:
        return text

    if old is None:
        assert namespace is not None
        if None in root.nsmap:
            # Its unprefixed references already mean that default namespace.
            raise SchemaError(
                f"{path} has no target namespace but a default namespace; cannot retarget it"
            )
        tag_end = re.match(r"<[^\s/>]+", text)
        assert tag_end is not None
        ns = quoteattr(namespace)
        return f"{text[:tag_end.end()]} targetNamespace={ns} xmlns={ns}{text[tag_end.end():]}"

    declaration = re.compile(
        r"(\sxmlns(?::[^\s=]+)?)\s*=\s*([\"'])" + re.escape(_escape(old)) + r"\2"
    )
    if namespace is not None:
        text = declaration.sub(lambda m: f"{m.group(1)}={quoteattr(namespace)}", text)
    else:
        # A default declaration can be emptied; prefixed ones stay, unused, see below.
        text = declaration.sub(
            lambda m: f'{m.group(1)}=""' if m.group(1).strip() == "xmlns" else m.group(0), text
        )
    root = etree.fromstring(text, _xsd_parser(), base_url=str(path))
    if namespace is None:
        del root.attrib["targetNamespace"]
        _drop_prefixes_of(root, old)
    else:
        root.set("targetNamespace", namespace)
    return etree.tostring(root, encoding="unicode")


def _drop_prefixes_of(root: etree._Element, old: str) -> None:
    """Rewrite ``p:Name`` to ``Name`` in QName-valued attributes where ``p`` is bound to ``old``."""

    def local(value: str, nsmap: dict[str | None, str]) -> str:
        prefix, sep, name = value.partition(":")
        return name if sep and nsmap.get(prefix) == old else value

    for element in root.iter(f"{{{_XSD_NS}}}*"):
        nsmap = element.nsmap
        for attribute in _QNAME_ATTRIBUTES:
            value = element.get(attribute)
            if value is not None:
                element.set(attribute, local(value.strip(), nsmap))
        for attribute in _QNAME_LIST_ATTRIBUTES:
            value = element.get(attribute)
            if value is not None:
                element.set(attribute, " ".join(local(v, nsmap) for v in value.split()))


def _escape(value: str) -> str:
    # How a namespace URI is spelled inside an attribute value as lxml serialises it.
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _locate(error: xmlschema.XMLSchemaValidationError) -> tuple[int, str]:
    """Line and local-name path of the element an xmlschema error is about.

    With a lazy resource xmlschema forgets the element and records the position the parser
    had reached instead, which for a content-model error is the end of the whole section.
    The error's ``obj`` still holds the element whose content failed (and ``index`` the
    offending child), and the tree is intact while the error is being handed out, so the
    position is taken from there.
    """
    element = error.obj if isinstance(error.obj, etree._Element) else None
    if element is None:
        return error.sourceline or 0, _CLARK_NS.sub("", error.path or "")
    index = getattr(error, "index", None)
    if isinstance(index, int) and 0 <= index < len(element):
        element = element[index]
    return element.sourceline or 0, _local_path(element)


def _local_path(element: etree._Element) -> str:
    """``/A/B[2]/C`` from local names; [n] is added where same-named siblings are known."""
    steps: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        step = etree.QName(node).localname
        position = 1 + sum(1 for _ in node.itersiblings(node.tag, preceding=True))
        if position > 1 or next(node.itersiblings(node.tag), None) is not None:
            step += f"[{position}]"
        steps.append(step)
        node = node.getparent()
    return "/" + "/".join(reversed(steps))


def _readable(text: str, prefixes: set[str]) -> str:
    """Drop "{uri}" and the prefixes of the document's namespace from a message."""
    text = _CLARK_NS.sub("", text)
    if prefixes:
        pattern = r"(?<![\w:.-])(?:" + "|".join(map(re.escape, sorted(prefixes))) + r"):(?=\w)"
        text = re.sub(pattern, "", text)
    return text
