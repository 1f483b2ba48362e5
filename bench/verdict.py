"""How every benchmark ends: one PASS/FAIL line per target, and an exit status for scripts."""

from __future__ import annotations

from collections.abc import Sequence


def verdict(checks: Sequence[tuple[str, bool]]) -> int:
    """Print each target as PASS or FAIL; 0 when all pass, 1 otherwise."""
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) else 1
