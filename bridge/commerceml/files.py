"""From the paths a user gives to the exchange files to read, in load order.

A folder or a zip means the XML files in it. Load order matters (GUIDE §2):
the classifier before goods, goods before offers, offers before prices and
rests, counterparties before the documents that name them. Package numbers
(``import0_10.xml`` after ``import0_2.xml``) sort numerically.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.commerceml.problems import StructuralError
from bridge.commerceml.safezip import extract

_RANKS = [
    ("classifier", 0), ("import", 1), ("offers", 2), ("offer", 2), ("prices", 3), ("rests", 4),
    ("contragents", 5), ("counterparties", 5), ("contractors", 5),
    ("documents", 6), ("orders", 6), ("order", 6), ("to", 6), ("from", 6),
]
_NUMBERS = re.compile(r"\d+")
_PEEK = 1 << 20


@dataclass(slots=True)
class InputFile:
    path: Path  # where the bytes are (maybe inside a temporary unpack folder)
    name: str  # what to call it in messages: the user's path, or "archive.zip!inner/name.xml"
    error: StructuralError | None = None  # set when the container itself was refused (bad zip)


def _prefix(name: str) -> str:
    stem = name.lower().rsplit(".", 1)[0]
    return re.split(r"[^a-zа-я]", stem, maxsplit=1)[0]


def _only_classifier(path: Path) -> bool:
    """An import file without goods (a classifier, maybe an empty Каталог) goes first.

    A peek, not a parse: the first megabyte either shows a <Товары> element
    or the file holds no goods worth ordering after.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(_PEEK)
    except OSError:
        return False
    return not any("Товары>".encode(encoding) in head for encoding in ("utf-8", "cp1251"))


def load_order_key(path: Path) -> tuple[int, tuple[int, ...], str]:
    prefix = _prefix(path.name)
    rank = dict(_RANKS).get(prefix, 7)
    if rank == 1 and _only_classifier(path):
        rank = 0
    # GUID-named packages carry no order in their names; keep 1C's numbers where there are some.
    numbers = () if "___" in path.name else tuple(int(n) for n in _NUMBERS.findall(path.name))
    return rank, numbers, path.name


def sort_load_order(paths: list[Path]) -> list[Path]:
    """Load order within each folder; folders one after another (each is its own package)."""
    return sorted(paths, key=lambda p: (str(p.parent), load_order_key(p)))


def _xml_files(folder: Path) -> list[Path]:
    return _files(folder, ".xml")


def _files(folder: Path, suffix: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == suffix
            and not p.name.startswith(".")]


NESTED_ZIP = ("a zip inside a zip is not unpacked (1C sends one zip of its exchange folder): "
              "send the files inside it directly")


@contextlib.contextmanager
def expand_inputs(paths: list[Path], *, unpack_in: Path | None = None) -> Iterator[list[InputFile]]:
    """Yield the files to read; temporary unpack folders vanish afterwards.

    unpack_in: where zips are unpacked (the daemon's spool, on the state's disk; /tmp under
    systemd's PrivateTmp is often a small tmpfs); the system's temporary folder by default."""
    temporary: list[Path] = []
    result: list[InputFile] = []
    try:
        # A folder means its XML files and then its zips, each unpacked as if it had been named.
        queue = [p for path in paths for p in ([path, *sorted(_files(path, ".zip"))] if path.is_dir() else [path])]
        for path in queue:
            if path.is_dir():
                result.extend(InputFile(p, str(p)) for p in sort_load_order(_xml_files(path)))
            elif path.suffix.lower() == ".zip":
                unpack = Path(tempfile.mkdtemp(prefix=".bridge-zip-", dir=unpack_in))
                temporary.append(unpack)
                try:
                    extract(path, unpack)
                except StructuralError as exc:
                    result.append(InputFile(path, str(path), error=exc))
                    continue
                for p in sort_load_order(_xml_files(unpack)):
                    result.append(InputFile(p, f"{path}!{p.relative_to(unpack).as_posix()}"))
                # Never silently left out: each inner zip is refused on its own (and quarantined by an ingest).
                result.extend(InputFile(p, f"{path}!{p.relative_to(unpack).as_posix()}",
                                        error=StructuralError(NESTED_ZIP)) for p in sorted(_files(unpack, ".zip")))
            else:
                result.append(InputFile(path, str(path)))
        yield result
    finally:
        for folder in temporary:
            shutil.rmtree(folder, ignore_errors=True)
