"""Prove a whole file well-formed early, on another core, so its records may be released as they are read.

A file the reader refuses at its end (truncated, broken markup, bytes not in
the declared encoding) must send nothing to the CRM. Without proof, every
operation of a file waits until the reader has reached its last byte, and
delivery cannot start before then. This check parses the file once more with
libxml2 alone: the same parser settings as the reader, no Python per element,
no tree kept. lxml lets go of the interpreter lock while libxml2 parses, so in
a thread it runs beside the reader at a tenth of the reader's time.

Its verdict only ever widens what may be sent early: "sound" means the file
parses to its end and its bytes match the declared encoding; the reader still
checks everything else (and at the end decides, as always, whether the file
commits). Any doubt (an error, an exception, the check not finished yet) is
"not proven", and the pipeline then waits for the end of the file as before.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from lxml import etree

from bridge.commerceml.encoding import EncodingGuard, sniff
from bridge.commerceml.problems import StructuralError

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


class _NoEvents:
    """A parser target without start/end/data: lxml then calls no Python code per element."""

    def close(self) -> None:
        return None


def parses_to_the_end(path: Path) -> bool:
    """True when the file is well-formed XML to its last byte, in the encoding it declares."""
    # The reader's settings: no entities, no DTD, no network, libxml2's default size limits.
    parser = etree.XMLParser(target=_NoEvents(), resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False)
    try:
        with open(path, "rb") as stream:
            chunk = stream.read(_CHUNK)
            guard = EncodingGuard(sniff(chunk))  # refuses a DOCTYPE and contradicting BOMs, like the reader
            while chunk:
                guard.feed(chunk)
                parser.feed(chunk)
                chunk = stream.read(_CHUNK)
        parser.close()
    except (etree.XMLSyntaxError, StructuralError, OSError, UnicodeError):
        return False
    return True


class SoundnessCheck:
    """``parses_to_the_end`` in a background thread; ``sound`` is True once it has proven the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._verdict: bool | None = None
        self._thread = threading.Thread(target=self._run, name=f"soundness:{path.name}", daemon=True)

    def start(self) -> SoundnessCheck:
        self._thread.start()
        return self

    @property
    def sound(self) -> bool:
        return self._verdict is True

    def _run(self) -> None:
        try:
            self._verdict = parses_to_the_end(self.path)
        except Exception:  # a doubt, never a crash: the pipeline waits for the file's end instead
            log.exception("soundness.failed path=%s", self.path)
            self._verdict = False
