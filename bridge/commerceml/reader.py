"""The streaming CommerceML reader.

One pass over a file with lxml ``iterparse`` yields typed records, checks each
record against our XSD (libxml2, per record, so line numbers are exact and one
bad record does not hide the next), and collects problems. Memory stays
bounded: each record's subtree is dropped as soon as it has been read, and
the records before it are removed from their parent, so a catalog of a
million products costs no more than one of a thousand.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from bridge.commerceml import build
from bridge.commerceml.build import child_text, flag, kids, local
from bridge.commerceml.encoding import DOCTYPE_REFUSED, EncodingGuard, EncodingInfo, sniff
from bridge.commerceml.header import Header, empty_counts
from bridge.commerceml.problems import ERROR, SKIPPED, WARNING, Problem, StructuralError
from bridge.commerceml.records import Offer, Record
from bridge.resources import data_dir
from bridge.commerceml.validation import RecordValidator, StreamingUserValidation, record_path, relative_path

log = logging.getLogger(__name__)

ROOT = "КоммерческаяИнформация"
SECTIONS = {"Классификатор", "Каталог", "ПакетПредложений", "Контрагенты", "Документ"}
_CONTAINERS = {"Группы", "Свойства", "ТипыЦен", "Склады", "ЕдиницыИзмерения"}
_RECORD_ENDS = {"Товар", "Предложение", "Контрагент", "Документ"}
# End events only: a section's attributes and ids are read when its first record ends (they
# precede the records, so they are parsed by then). Start events would double the Python work.
_TAGS = [f"{{*}}{name}" for name in sorted({ROOT} | SECTIONS | _CONTAINERS | _RECORD_ENDS)]
KNOWN_NAMESPACE = "urn:1C.ru:commerceml"
MAX_STORED_PROBLEMS = 1000
ENDS_EARLY = "the file ends too early"  # the refusal the daemon leaves in its source (daemon/loop.py)
_HEAD = 65536
_REPARSE_LIMIT = 16 << 20  # bytes: a refused file this small is parsed again (about 0.3 s) to name where it broke
# libxml2 error codes (lxml.etree.ErrorTypes) whose cause is known whatever line they are on.
_INVALID_CHAR = etree.ErrorTypes.ERR_INVALID_CHAR
_RESOURCE_LIMIT = etree.ErrorTypes.ERR_RESOURCE_LIMIT
_NOT_MARKUP = {etree.ErrorTypes.ERR_DOCUMENT_EMPTY}
# Mistakes in complete markup: a file cut short ends in an unfinished tag, never in one of these.
_MARKUP_MISTAKES = {etree.ErrorTypes.ERR_TAG_NAME_MISMATCH, etree.ErrorTypes.ERR_DOCUMENT_END,
                    etree.ErrorTypes.ERR_ATTRIBUTE_REDEFINED, etree.ErrorTypes.ERR_NS_DECL_ERROR}


class NoRecordCheck:
    def check(self, element: etree._Element, index: int) -> None:
        """The whole document is checked instead (--strict)."""


class _CountingReader:
    """A file object for lxml that counts bytes (progress) and guards the encoding."""

    def __init__(self, raw: BinaryIO, guard: EncodingGuard) -> None:
        self._raw = raw
        self._guard = guard
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self.position += len(chunk)
        self._guard.feed(chunk)
        return chunk


class FileReader:
    """Reads one exchange file. Iterate ``records()`` once; then read
    ``header``, ``counts`` and ``problems``.

    level: "tolerant" (schema deviations are warnings) or "strict" (they are
    errors). user_schema: an XSD to validate the whole file against in the
    same streaming pass (its violations are errors).
    """

    def __init__(self, path: str | Path, display_name: str | None = None, *, level: str = "tolerant",
                 user_schema: str | Path | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 build: bool = True,
                 skip: Callable[[str, str, etree._Element], bool] | None = None,
                 data: bytes | None = None) -> None:
        """build=False: check, identify and count goods and offers without building their records
        (what ``inspect`` needs). skip(kind, Ид, element): called for each product and offer before it
        is checked and built; True means the caller already has these bytes (it took them, checked,
        before) and the record is neither checked again nor built."""
        self.path = Path(path)
        self.name = display_name or str(path)
        self.level = level
        self.user_schema = Path(user_schema) if user_schema else None
        self._check_records = not (level == "strict" and self.user_schema is None)
        if level == "strict" and self.user_schema is None:
            self.user_schema = data_dir("schemas") / "commerceml-strict.xsd"
        self.progress = progress
        self.data = data  # read these bytes instead of the file (a document about to be written)
        self.build = build
        self.skip = skip
        self.header = Header(file=self.name)
        self.counts = empty_counts()
        self.skipped = 0
        self.problems: list[Problem] = []
        self.problem_totals = {ERROR: 0, SKIPPED: 0, WARNING: 0}
        self.bytes_read = 0
        self._dictionaries: dict[str, dict[str, str]] = {}
        self._price_types: set[str] = set()
        self._warehouses: set[str] = set()
        self._offer_shape = {"prices": False, "stock": False, "other": False}
        self._validator: RecordValidator | NoRecordCheck | None = None
        self._current: tuple[etree._Element, int] | None = None
        self._root_closed = False
        self._root: etree._Element | None = None  # the partial tree, for where a syntax error stopped it
        self._entered: set[str] = set()  # top-level sections whose header has been read
        self.ends_early = False  # refused because it stops before its end (truncated, or still being written)

    # -- results -----------------------------------------------------------
    @property
    def has_errors(self) -> bool:
        return self.problem_totals[ERROR] > 0

    def report(self, severity: str, line: int, path: str, message: str) -> None:
        self.problem_totals[severity] += 1
        if len(self.problems) < MAX_STORED_PROBLEMS:
            self.problems.append(Problem(severity, self.name, line, path, message))
        elif len(self.problems) == MAX_STORED_PROBLEMS:
            self.problems.append(Problem(WARNING, self.name, line, path,
                                         f"more than {MAX_STORED_PROBLEMS} problems; the rest are only counted"))

    # -- reading -----------------------------------------------------------
    def records(self) -> Iterator[Record]:
        """Yield the file's records in document order; never raises for bad input."""
        try:
            with (io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")) as raw:
                self.header.size = len(self.data) if self.data is not None else self.path.stat().st_size
                head = raw.read(_HEAD)
                raw.seek(0)
                info = sniff(head)
                if not info.prolog_checked:
                    self._refuse_doctype(raw)
                self.header.encoding, self.header.bom = info.encoding, info.bom
                yield from self._parse(raw, info)
        except StructuralError as exc:
            self.report(ERROR, exc.line, exc.path, exc.message)
        except OSError as exc:
            self.report(ERROR, 0, "", f"cannot read the file: {exc.strerror or exc}")
        self._finish()

    def _parse(self, raw: BinaryIO, info: EncodingInfo) -> Iterator[Record]:
        # libxml2's error log is per thread and outlives a parse: a failure must be judged by its own errors.
        etree.clear_error_log()
        guard = EncodingGuard(info)
        # With nothing to count or guard, libxml2 reads the file itself: feeding it through a
        # Python file object costs a tenth of the whole parse.
        direct = self.data is None and self.progress is None and not guard.active and self.user_schema is None
        source = _CountingReader(raw, guard)
        user = StreamingUserValidation(self.user_schema, self._sniff_namespace(raw)) if self.user_schema else None
        context = etree.iterparse(
            str(self.path) if direct else source, events=("end",), tag=_TAGS, resolve_entities=False,
            no_network=True,
            load_dtd=False, huge_tree=False, remove_comments=True, remove_pis=True,
            schema=user.schema if user else None)
        root_seen = False
        try:
            for event, element in context:
                if not root_seen:
                    root_seen = True
                    self._root = element.getroottree().getroot()
                    self._check_root(self._root)
                if element.getparent() is None:
                    self._root_closed = True
                yield from self._on_end(element)
                if self.progress is not None and source.position - self.bytes_read > 1 << 20:
                    self.bytes_read = source.position
                    self.progress(self.bytes_read, self.counts["products"] + self.counts["offers"])
        except etree.XMLSyntaxError as exc:
            if user is not None and user.owns(exc):
                for line, path, message in user.problems(exc, self.path):
                    self.report(ERROR, line, path, message)
            else:
                # Judged by lines, not by bytes consumed: the parser reads a small file (or bytes in
                # memory) whole before it fails, so "all consumed" would call any broken markup a
                # truncation.
                consumed_all = self._error_at_end(exc)
                raise self._syntax_error(exc, context, consumed_all) from None
        self.bytes_read = self.header.size if direct else source.position
        if not root_seen:
            root = getattr(context, "root", None)
            if root is None:
                raise StructuralError("the file contains no XML element", line=1)
            self._check_root(root)

    def _error_at_end(self, exc: etree.XMLSyntaxError) -> bool:
        """Did parsing fail on the file's last line (it ends too early)? Only errors pay for this."""
        lines = 1
        if self.data is not None:
            lines += self.data.count(b"\n")
        else:
            with open(self.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    lines += chunk.count(b"\n")
        line = exc.lineno or max((e.line for e in exc.error_log), default=0)
        return line >= lines - 1

    def _refuse_doctype(self, raw: BinaryIO) -> None:
        """The parser's view of a prolog the sniffed head did not cover (UTF-16, or comments longer
        than the head): a DOCTYPE there is refused like one in the head. Entities are not expanded
        (resolve_entities=False), but their references would reach the records and crash the schema
        validator. Rare files only: a second, short pass up to the root's start tag."""
        raw.seek(0)
        try:
            for _, element in etree.iterparse(raw, events=("start",), resolve_entities=False, no_network=True,
                                              load_dtd=False, huge_tree=False):
                info = element.getroottree().docinfo
                if info.doctype or info.internalDTD is not None or info.system_url or info.public_id:
                    raise StructuralError(DOCTYPE_REFUSED, line=max((element.sourceline or 2) - 1, 1))
                break
        except etree.XMLSyntaxError:
            pass  # the main pass reports it with a line number
        finally:
            raw.seek(0)

    def _ends_mid_character(self) -> bool:
        """Do the file's last bytes start a UTF-8 sequence that the end of the file cuts short?"""
        if self.data is not None:
            tail = self.data[-4:]
        else:
            with open(self.path, "rb") as f:
                f.seek(max(self.header.size - 4, 0))
                tail = f.read(4)
        for start in range(len(tail) - 1, max(len(tail) - 4, -1), -1):
            lead = tail[start]
            if lead < 0x80:
                return False
            if lead >= 0xC0:  # a lead byte: does it announce more bytes than are left?
                needed = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
                return len(tail) - start < needed
        return False

    def _sniff_namespace(self, raw: BinaryIO) -> str | None:
        """The root's namespace, read before the main pass so a user schema can be retargeted."""
        raw.seek(0)
        try:
            for _, element in etree.iterparse(raw, events=("start",), resolve_entities=False, no_network=True,
                                              load_dtd=False, huge_tree=False):
                return etree.QName(element).namespace
        except etree.XMLSyntaxError:
            return None  # the main pass reports it with a line number
        finally:
            raw.seek(0)
        return None

    def _syntax_error(self, exc: etree.XMLSyntaxError, context: object, consumed_all: bool) -> StructuralError:
        line, message, code = exc.lineno or 0, str(getattr(exc, "msg", exc) or exc), exc.code
        if not line:
            # iterparse sometimes raises a generic 'no element found' at line 0;
            # the parser's log holds the real cause with its line.
            fatal = [e for e in exc.error_log if e.level_name == "FATAL"]
            if fatal:
                line, message, code = fatal[-1].line, fatal[-1].message, fatal[-1].type
        message = message.split(", line ")[0].strip()
        # Exact for a file small enough to parse again; for a big one, the partial tree's last branch
        # (whose last element may already be closed).
        path = self._path_at_error() if self.header.size <= _REPARSE_LIMIT else ""
        if not path:
            path = _deepest_path(getattr(context, "root", None) or self._root)
        return StructuralError(self._reason(message, code, consumed_all), line=line, path=path)

    def _path_at_error(self) -> str:
        """The elements open where parsing failed, from a second parse up to the error: only a refused
        file pays for it, and only a small one (see _REPARSE_LIMIT)."""
        stack: list[str] = []
        try:
            with (io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")) as raw:
                for event, element in etree.iterparse(raw, events=("start", "end"), resolve_entities=False,
                                                      no_network=True, load_dtd=False, huge_tree=False):
                    if event == "start":
                        stack.append(local(element.tag))
                    else:
                        stack.pop()
                        element.clear(keep_tail=False)
        except (etree.XMLSyntaxError, OSError):
            pass
        return "/" + "/".join(stack) if stack else ""

    def _reason(self, message: str, code: int, consumed_all: bool) -> str:
        """What went wrong, in words an administrator can act on. A cause libxml2 names (a bad
        character, a safety limit, no markup at all) wins over "ends too early", which is only a
        guess from where the error is: every error of a file written on one line is on its last line."""
        lowered = message.lower()
        if self.header.size == 0:
            return "the file is empty (0 bytes)"
        if "incomplete utf-8 sequence" in lowered and consumed_all and self._ends_mid_character():
            # Cut inside a two-byte Cyrillic letter: as much a truncation as a cut inside a tag.
            self.ends_early = True
            return f"{ENDS_EARLY} (truncated, or still being written, inside a character): {message}"
        if code == _INVALID_CHAR and "encoding" not in lowered:
            return ("the file holds a character XML does not allow (a NUL byte or a control character: "
                    f"a damaged or binary file): {message}")
        if "encoding" in lowered or "utf-8" in lowered:
            return (f"the file says it is {self.header.encoding or 'UTF-8'} but its bytes are not "
                    f"(probably windows-1251 without a declaration, or a damaged file): {message}")
        if "entity" in lowered:
            return f"the file uses an entity, which CommerceML never does: {message}"
        if code == _RESOURCE_LIMIT:
            return ("the file goes beyond the parser's safety limits (nesting deeper than 256 levels, or a "
                    f"single text or name of more than 10 MB), far beyond any 1C export: {message}")
        if code in _NOT_MARKUP or "start tag expected" in lowered or "document is empty" in lowered:
            return f"this is not an XML file: {message}"
        if consumed_all and not self._root_closed and code not in _MARKUP_MISTAKES:
            self.ends_early = True
            return f"{ENDS_EARLY} (truncated, or still being written): {message}"
        return f"the XML is broken: {message}"

    def _check_root(self, root: etree._Element) -> None:
        qname = etree.QName(root)
        if qname.localname != ROOT:
            raise StructuralError(
                f"the root element is <{qname.localname}>, not <{ROOT}>: this is not a CommerceML exchange file",
                line=root.sourceline or 1, path=f"/{qname.localname}")
        namespace = qname.namespace
        self.header.namespace = namespace
        self.header.schema_version = root.get("ВерсияСхемы")
        self.header.generated_at = root.get("ДатаФормирования")
        if namespace and not namespace.startswith(KNOWN_NAMESPACE):
            self.report(WARNING, root.sourceline or 1, f"/{ROOT}", f"unexpected namespace '{namespace}'; read by element names anyway")
        if not self.header.schema_version:
            self.report(WARNING, root.sourceline or 1, f"/{ROOT}", "ВерсияСхемы is missing; the file is read as CommerceML 2")
        # --strict checks the whole document (headers, Владелец and all) against the spec-like
        # schema in the streaming pass; each record is then not checked a second time.
        self._validator = RecordValidator(self.level, namespace, self) if self._check_records else NoRecordCheck()

    def _enter_section(self, section: etree._Element) -> None:
        """First sight of a top-level section: its attributes and the ids before its records."""
        name = local(section.tag)
        if name in self._entered:
            return
        self._entered.add(name)
        parent = section.getparent()
        if parent is None or local(parent.tag) not in (ROOT, "Контейнер"):
            return
        self.header.sections.add(name)
        attribute = section.get("СодержитТолькоИзменения")
        if attribute is not None:
            self.header.only_changes[name] = flag(attribute)
        elif name == "ИзмененияПакетаПредложений":  # CommerceML 2.10/3: changes by its very name
            self.header.only_changes[name] = True
        self._read_section_ids(section)

    def _read_section_ids(self, section: etree._Element) -> None:
        """Ids and the old element form of СодержитТолькоИзменения, which precede the records."""
        name = local(section.tag)
        if name not in self.header.only_changes:
            value = child_text(section, "СодержитТолькоИзменения")
            if value is not None:
                self.header.only_changes[name] = flag(value)
        if name == "Каталог":
            self.header.catalog_id = self.header.catalog_id or child_text(section, "Ид")
            self.header.classifier_id = self.header.classifier_id or child_text(section, "ИдКлассификатора")
        elif name in ("ПакетПредложений", "ИзмененияПакетаПредложений"):
            self.header.package_id = self.header.package_id or child_text(section, "Ид")
            self.header.package_catalog_id = self.header.package_catalog_id or child_text(section, "ИдКаталога")
        elif name == "Классификатор":
            self.header.classifier_id = self.header.classifier_id or child_text(section, "Ид")

    def _on_end(self, element: etree._Element) -> Iterator[Record]:
        name = local(element.tag)
        parent = element.getparent()
        parent_name = local(parent.tag) if parent is not None else ""
        if name == "Товар":
            if parent_name == "Товары" and local((section := parent.getparent()).tag) == "Каталог":
                if "Каталог" not in self._entered:
                    self._enter_section(section)
                self.counts["products"] += 1
                yield from self._record(element, "products", "product", lambda e: build.product(
                    e, self._dictionaries, self.header.catalog_id))
        elif name == "Предложение":
            if "ПакетПредложений" not in self._entered and parent is not None and parent.getparent() is not None:
                self._enter_section(parent.getparent())
            self.counts["offers"] += 1
            yield from self._record(element, "offers", "offer", lambda e: build.offer(
                e, self._warn, self._dictionaries, self.header.package_id, self.header.package_catalog_id))
        elif name == "Контрагент":
            if parent_name == "Контрагенты" and local(parent.getparent().tag) in (ROOT, "Контейнер"):
                if "Контрагенты" not in self._entered:
                    self._enter_section(parent)
                self.counts["counterparties"] += 1
                yield from self._record(element, "counterparties", "counterparty", build.counterparty)
        elif name == "Документ":
            self.header.sections.add("Документ")
            self.counts["documents"] += 1
            yield from self._record(element, "documents", "document", lambda e: build.document(e, self._warn))
        elif name in _CONTAINERS:
            if parent_name in ("Классификатор", "ПакетПредложений", "Каталог"):
                if parent_name not in self._entered:
                    self._enter_section(parent)
                yield from self._container(element, name)
        elif name in SECTIONS:
            if parent_name in (ROOT, "Контейнер"):
                self._enter_section(element)
                self._read_section_ids(element)
                element.clear(keep_tail=False)

    def _record(self, element: etree._Element, count_key: str, what: str,
                make: Callable[[etree._Element], Record | None]) -> Iterator[Record]:
        assert self._validator is not None
        index = self.counts[count_key]
        self._current = (element, index)
        quick = (not self.build and what == "document") or ((not self.build or self.skip is not None)
                                                             and what in ("product", "offer"))
        record_id = self._identify(element, what == "offer") if quick else None  # a document's Ид: the same way
        if record_id is not None and self.build and self.skip is not None and self.skip(what, record_id, element):
            # The caller knows these very bytes: they passed the same checks when it took them.
            self._current = None
            _drop(element)
            return
        self._validator.check(element, index)
        if quick:
            if record_id is None or not self.build:
                if record_id is None:
                    self.skipped += 1
                    self.report(SKIPPED, element.sourceline or 0, record_path(element, index),
                                f"this {what} has no Ид, so it cannot be identified; it is skipped and the rest "
                                "of the file is read")
                self._current = None
                _drop(element)
                return
        record = make(element)
        if record is None:
            self.skipped += 1
            self.report(SKIPPED, element.sourceline or 0, record_path(element, index),
                        f"this {what} has no Ид, so it cannot be identified; it is skipped and the rest of the file is read")
        else:
            if isinstance(record, Offer):
                self._check_offer(record, element, index)
            yield record
        self._current = None
        _drop(element)

    def _identify(self, element: etree._Element, is_offer: bool = False) -> str | None:
        """The record's Ид without building it; for offers also what they carry (the file's kind)."""
        if is_offer and all(self._offer_shape.values()):
            is_offer = False  # the kind is settled: only the Ид is needed (usually the first child)
        record_id = None
        for c in element:
            tag = local(c.tag)
            if tag == "Ид":
                record_id = build.text(c)
                if not is_offer:
                    break
            elif is_offer:
                if tag == "Цены":
                    self._offer_shape["prices"] = True
                elif tag in ("Остатки", "Склад", "Количество"):
                    self._offer_shape["stock"] = True
                elif tag in ("Наименование", "ХарактеристикиТовара", "Артикул"):
                    self._offer_shape["other"] = True
        return record_id

    def _container(self, element: etree._Element, name: str) -> Iterator[Record]:
        assert self._validator is not None
        if name == "Группы":
            for index, (tag, group) in enumerate(kids(element), 1):
                if tag == "Группа":
                    self._validator.check(group, index)
            for group in build.groups(element, None, self._skip):
                self.counts["groups"] += 1
                yield group
        else:
            item, count_key, what, make = {
                "Свойства": ("Свойство", "properties", "property", build.property_),
                "ТипыЦен": ("ТипЦены", "price_types", "price type", build.price_type),
                "Склады": ("Склад", "warehouses", "warehouse", build.warehouse),
                "ЕдиницыИзмерения": ("ЕдиницаИзмерения", "", "unit", build.unit),
            }[name]
            for index, (tag, c) in enumerate(kids(element), 1):
                if tag not in (item, "СвойствоНоменклатуры"):
                    continue
                self._validator.check(c, index)
                record = make(c)
                if count_key:
                    self.counts[count_key] += 1
                if record is None:
                    self.skipped += 1
                    self.report(SKIPPED, c.sourceline or 0, record_path(c, index),
                                f"this {what} has no Ид, so it cannot be identified; it is skipped")
                    continue
                if record.kind == "property":
                    self._dictionaries[record.id] = record.values
                elif record.kind == "price_type":
                    self._price_types.add(record.id)
                elif record.kind == "warehouse":
                    self._warehouses.add(record.id)
                yield record
        element.clear(keep_tail=False)

    def _check_offer(self, offer: Offer, element: etree._Element, index: int) -> None:
        # The path only for a warning: walking the ancestors for each of a million offers adds up.
        if offer.prices:
            self._offer_shape["prices"] = True
            if self._price_types:
                for price in offer.prices:
                    if price.price_type_id not in self._price_types:
                        self.report(WARNING, element.sourceline or 0, record_path(element, index),
                                    f"price type {price.price_type_id} is not among this file's ТипыЦен")
        if offer.stock is not None or offer.quantity is not None:
            self._offer_shape["stock"] = True
            if self._warehouses and offer.stock:
                for wid in offer.stock:
                    if wid not in self._warehouses:
                        self.report(WARNING, element.sourceline or 0, record_path(element, index),
                                    f"warehouse {wid} is not among this file's Склады")
        if offer.name or offer.characteristics or offer.sku:
            self._offer_shape["other"] = True

    def _warn(self, element: etree._Element, message: str) -> None:
        if self._current is not None:
            record, index = self._current
            path = record_path(record, index) + relative_path(element, record)
        else:
            path = element_path(element)
        self.report(WARNING, element.sourceline or 0, path, message)

    def _skip(self, element: etree._Element, message: str) -> None:
        self.skipped += 1
        self.report(SKIPPED, element.sourceline or 0, element_path(element), message)

    def _finish(self) -> None:
        self.header.kind = _kind(self.header, self.counts, self._offer_shape, self.path.name)


def _drop(element: etree._Element) -> None:
    """Free a finished record and the finished siblings before it (never ancestors)."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is None:
        return
    while element.getprevious() is not None:
        del parent[0]


def element_path(element: etree._Element) -> str:
    """'/КоммерческаяИнформация/Каталог/Товары/Товар/Цены/Цена[2]' with positions among same-named siblings."""
    return relative_path(element, None)


def _deepest_path(root: etree._Element | None) -> str:
    """Where parsing stopped: follow the last child down from the root."""
    if root is None:
        return ""
    node = root
    parts = [local(node.tag)]
    while len(node):
        node = node[-1]
        parts.append(local(node.tag))
    return "/" + "/".join(p for p in parts if p)


def _kind(header: Header, counts: dict[str, int], shape: dict[str, bool], file_name: str) -> str:
    kinds: list[str] = []
    # A classifier travels with offers too (price types, warehouses, properties);
    # it makes a file a catalog only when nothing else is in it.
    # CommerceML 3 sends offer changes as ИзмененияПакетаПредложений: offers all the same.
    if "ИзмененияПакетаПредложений" in header.sections:
        header.sections.add("ПакетПредложений")
    others = {"ПакетПредложений", "Контрагенты", "Документ"} & header.sections
    if "Каталог" in header.sections or ("Классификатор" in header.sections and not others):
        kinds.append("catalog")
    if "ПакетПредложений" in header.sections:
        lowered = file_name.lower()
        if lowered.startswith("prices"):
            kinds.append("prices")
        elif lowered.startswith("rests"):
            kinds.append("rests")
        elif shape["prices"] and not shape["stock"] and not shape["other"]:
            kinds.append("prices")
        elif shape["stock"] and not shape["prices"] and not shape["other"]:
            kinds.append("rests")
        else:
            kinds.append("offers")
    if "Контрагенты" in header.sections:
        kinds.append("counterparties")
    if "Документ" in header.sections:
        kinds.append("documents")
    if not kinds:
        return "empty"
    return kinds[0] if len(kinds) == 1 else "mixed"
