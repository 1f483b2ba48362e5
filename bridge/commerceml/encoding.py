"""What a file says about its encoding, and whether its bytes agree.

1C writes UTF-8 with a BOM; older configurations and Bitrix write windows-1251.
A file whose bytes contradict its XML declaration would otherwise be read as
mojibake without any error (every byte is valid windows-1251), so we check.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from bridge.commerceml.problems import StructuralError

BOM_UTF8 = b"\xef\xbb\xbf"
_DECLARATION = re.compile(rb"^\s*<\?xml\b[^>]*?\bencoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']", re.S)
_XML_DECL = re.compile(rb"^\s*<\?xml\b[^>]*\?>", re.S)
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.I)
_ENTITY = re.compile(rb"<!ENTITY", re.I)
# In UTF-8, Cyrillic letters are two bytes: D0/D1 followed by a continuation byte.
_UTF8_CYRILLIC = re.compile(rb"[\xd0\xd1][\x80-\xbf]")
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")

# Single-byte encodings whose bytes a UTF-8 file would still "decode" silently.
_SINGLE_BYTE = {"cp1251", "koi8-r", "koi8-u", "cp866", "iso8859-5", "latin-1", "iso8859-1", "cp1252", "mac-cyrillic"}


@dataclass(slots=True)
class EncodingInfo:
    declared: str | None  # as written in the declaration
    encoding: str  # the name we report: "UTF-8", "windows-1251", ...
    codec: str  # Python's canonical codec name
    bom: bool
    prolog_checked: bool = True  # False: the head did not reach the root element, a DOCTYPE may follow


def _display_name(codec: str, declared: str | None) -> str:
    return {"utf-8": "UTF-8", "cp1251": "windows-1251", "utf-16": "UTF-16"}.get(codec, declared or codec)


def sniff(head: bytes) -> EncodingInfo:
    """Read the BOM and the XML declaration from the first bytes of a file.

    Raises StructuralError when they contradict each other, name an unknown
    encoding, or when the prolog carries a DOCTYPE (the door to XXE and entity
    bombs; CommerceML never needs one).
    """
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return EncodingInfo(declared=None, encoding="UTF-16", codec="utf-16", bom=True, prolog_checked=False)
    bom = head.startswith(BOM_UTF8)
    body = head[3:] if bom else head
    match = _DECLARATION.match(body)
    declared = match.group(1).decode("ascii") if match else None
    try:
        codec = codecs.lookup(declared).name if declared else "utf-8"
    except LookupError:
        raise StructuralError(
            f"the XML declaration names the encoding '{declared}', which is unknown; "
            "1C writes UTF-8 or windows-1251", line=1) from None
    if bom and codec != "utf-8":
        raise StructuralError(
            f"the file starts with a UTF-8 byte order mark but declares encoding '{declared}'; "
            "the bytes and the declaration contradict each other", line=1)
    checked = _refuse_doctype(body)
    return EncodingInfo(declared=declared, encoding=_display_name(codec, declared), codec=codec, bom=bom,
                        prolog_checked=checked)


def _refuse_doctype(body: bytes) -> bool:
    """Refuse a DOCTYPE in the prolog; False when the bytes given do not reach the root element."""
    prolog_end = _XML_DECL.match(body)
    position = prolog_end.end() if prolog_end else 0
    # The DOCTYPE can only come before the root element, after comments and processing instructions,
    # whose text may hold anything ("<", even "<!DOCTYPE"): step over them rather than search.
    while True:
        while position < len(body) and body[position:position + 1] in b" \t\r\n":
            position += 1
        if body.startswith(b"<!--", position):
            end = body.find(b"-->", position + 4)
        elif body.startswith(b"<?", position):
            end = body.find(b"?>", position + 2)
        else:
            break
        if end < 0:
            return False  # a prolog longer than the head: the parser's own view decides (reader)
        position = end + (3 if body.startswith(b"<!--", position) else 2)
    if _DOCTYPE.match(body, position) or _ENTITY.match(body, position):
        raise StructuralError(DOCTYPE_REFUSED, line=body[:position].count(b"\n") + 1)
    return re.match(rb"<[^!?\x00]", body[position:position + 2]) is not None  # the root element starts here


DOCTYPE_REFUSED = ("the file contains a DOCTYPE/ENTITY declaration; CommerceML never uses one and it can "
                   "be used to read local files or exhaust memory, so the file is refused")


class EncodingGuard:
    """Checks chunks of a file declared single-byte for UTF-8 bytes in disguise."""

    def __init__(self, info: EncodingInfo) -> None:
        self.active = info.codec in _SINGLE_BYTE
        self.declared = info.declared
        self._pairs = 0
        self._high = 0
        self.lines_before = 1
        self.decided = not self.active

    def feed(self, chunk: bytes) -> None:
        if self.decided:
            return
        self._pairs += len(_UTF8_CYRILLIC.findall(chunk))
        self._high += len(_HIGH_BYTE.findall(chunk))
        # Real windows-1251 Russian text has D0/D1 ("Р", "С") followed by a
        # letter in E0..FF far more often than by 80..BF; UTF-8 Cyrillic is
        # nothing but such pairs. Decide once there is enough evidence.
        if self._high >= 40:
            if self._pairs * 2 >= self._high * 0.8:
                match = _UTF8_CYRILLIC.search(chunk)
                line = self.lines_before + (chunk[: match.start()].count(b"\n") if match else 0)
                raise StructuralError(
                    f"the file declares encoding '{self.declared}' but its bytes are UTF-8 "
                    "(Russian text would be garbled); fix the XML declaration or re-export", line=line)
            if self._high >= 4000:
                self.decided = True
        self.lines_before += chunk.count(b"\n")
