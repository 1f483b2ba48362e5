"""Read whole files for ``inspect`` and ``validate``: header, counts, problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bridge.commerceml.files import InputFile
from bridge.commerceml.header import Header, empty_counts
from bridge.commerceml.problems import ERROR, Problem
from bridge.commerceml.reader import FileReader


@dataclass(slots=True)
class FileSummary:
    header: Header
    counts: dict[str, int] = field(default_factory=empty_counts)
    skipped: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != ERROR]

    def as_json(self) -> dict[str, object]:
        h = self.header
        return {
            "file": h.file, "kind": h.kind, "schema_version": h.schema_version, "namespace": h.namespace,
            "encoding": h.encoding, "bom": h.bom, "contains_only_changes": h.contains_only_changes,
            "contains_only_changes_by_section": h.only_changes, "generated_at": h.generated_at,
            "size": h.size, "counts": self.counts, "skipped": self.skipped,
            "warnings": [_problem_json(p) for p in self.warnings],
            "errors": [_problem_json(p) for p in self.errors],
        }


def _problem_json(problem: Problem) -> dict[str, object]:
    return {"line": problem.line, "path": problem.path, "severity": problem.severity,
            "message": problem.message, "text": problem.format()}


def summarize(item: InputFile, *, level: str = "tolerant", user_schema: Path | None = None,
              build: bool = True) -> FileSummary:
    """Stream one file to its end and keep only what inspect/validate print.

    build=False (inspect) checks every record against the schema, identifies and counts it, but
    does not build the typed goods and offers; validate builds them, which adds the checks that
    need the values (numbers, price type and warehouse references).
    """
    if item.error is not None:
        summary = FileSummary(header=Header(file=item.name))
        summary.problems.append(Problem(ERROR, item.name, item.error.line, item.error.path, item.error.message))
        return summary
    reader = FileReader(item.path, item.name, level=level, user_schema=user_schema, build=build)
    for _ in reader.records():
        pass
    return FileSummary(header=reader.header, counts=reader.counts, skipped=reader.skipped, problems=reader.problems)
