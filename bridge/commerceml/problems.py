"""Problems found in an exchange file, and how they are worded for people.

Three severities, matching how the bridge reacts:

* ``error``   - structural: the file cannot be used and stops (not XML, DOCTYPE,
                wrong root, encoding lie, truncation), or violates the schema
                the user asked for with --strict/--schema.
* ``skipped`` - one record cannot be identified (no Ид); it is left out and the
                rest of the file goes on.
* ``warning`` - a deviation from the CommerceML spec that we can live with.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

ERROR = "error"
SKIPPED = "skipped"
WARNING = "warning"


@dataclass(slots=True)
class Problem:
    severity: str
    file: str
    line: int
    path: str
    message: str

    def format(self) -> str:
        """``FILE:LINE: ELEMENT-PATH: severity: message``, one line."""
        message = " ".join(self.message.split())
        return f"{self.file}:{self.line}: {self.path or '/'}: {self.severity}: {message}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class StructuralError(Exception):
    """Raised inside the reader when a file cannot be read any further."""

    def __init__(self, message: str, line: int = 0, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.path = path


# "{urn:1C.ru:commerceml_2}Товар": a namespace URI has ':' or '/'; a pattern's "{10}" does not.
_NS_IN_BRACES = re.compile(r"\{[^{}]*[:/][^{}]*\}")
_PREFIXED = re.compile(r"(?<![\w:/.])[A-Za-z_][\w.-]*:(?=[А-Яа-яЁёA-Za-z_])")

# libxml2 speaks XSD; a 1C administrator does not. Each pattern turns one of the
# messages libxml2 gives for schema violations into plain words.
_REWORDS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"Element '([^']+)': '([^']*)' is not a valid value of the atomic type 'xs:(?:decimal|double|float)'\."),
     r"\1 must be a number, got '\2'"),
    (re.compile(r"Element '([^']+)': '([^']*)' is not a valid value of the (?:atomic|local atomic) type '[^']*(?:Дата|date|Date)[^']*'\."),
     r"\1 must be a date (YYYY-MM-DD), got '\2'"),
    (re.compile(r"Element '([^']+)': '([^']*)' is not a valid value of the (?:atomic|local atomic) type '([^']*)'\."),
     r"\1 has the value '\2', which is not allowed here (\3)"),
    (re.compile(r"Element '([^']+)': \[facet '(?:length|minLength|maxLength|pattern)'\] The value '([^']*)'.*"),
     r"\1 has the value '\2' of the wrong length or form"),
    (re.compile(r"Element '([^']+)': \[facet '[^']+'\] The value '([^']*)'.*"),
     r"\1 has the value '\2', which is not allowed here"),
    (re.compile(r"Element '([^']+)': This element is not expected\. Expected is (?:one of )?\( ?([^)]*)\)\.?"),
     r"\1 is not expected here (expected: \2)"),
    (re.compile(r"Element '([^']+)': This element is not expected\.?"),
     r"\1 is not expected here (unknown or misplaced element)"),
    (re.compile(r"Element '([^']+)': Missing child element\(s\)\. Expected is (?:one of )?\( ?([^)]*)\)\.?"),
     r"\1 lacks a required element: \2"),
    (re.compile(r"Element '([^']+)', attribute '([^']+)': The attribute '[^']+' is not allowed\.?"),
     r"\1 has attribute \2, which the schema does not allow"),
    (re.compile(r"Element '([^']+)': The attribute '([^']+)' is required but missing\.?"),
     r"\1 lacks the required attribute \2"),
    (re.compile(r"Element '([^']+)': No matching global declaration available for the validation root\.?"),
     r"\1 is not an element this schema knows"),
]


def plain_names(text: str) -> str:
    """Drop namespace URIs and prefixes: '{urn:1C.ru:commerceml_2}Товар' -> 'Товар'."""
    return _PREFIXED.sub("", _NS_IN_BRACES.sub("", text))


def reword(message: str) -> str:
    """Reword a libxml2 schema message for a person who knows 1C, not XSD."""
    message = plain_names(" ".join(message.split()))
    for pattern, replacement in _REWORDS:
        if pattern.match(message):
            return pattern.sub(replacement, message).strip()
    return message
