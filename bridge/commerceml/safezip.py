"""Unpack a zip of an exchange folder without trusting it.

1C may send the whole exchange folder as one zip. A hostile or broken archive
can name files outside the target (absolute paths, ``..``: "zip slip"), carry
symlinks, or expand to far more than it weighs (a zip bomb). We check every
entry before writing anything, so a refused archive leaves no file behind,
and we count bytes actually written rather than trusting the sizes the
archive declares.
"""

from __future__ import annotations

import lzma
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from bridge.commerceml.problems import StructuralError

# What reading an entry raises for a broken archive: a bad CRC or header (BadZipFile), a data
# stream that ends early (EOFError) or is not valid Deflate/BZIP2/LZMA (zlib.error, OSError from
# bz2, LZMAError). Deflate64 (method 9, Windows Explorer's choice for big archives) and other
# methods zipfile lacks raise NotImplementedError. Any other OSError is ours (disk full, EFBIG).
_DAMAGED: tuple[type[BaseException], ...] = (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)
DEFAULT_MAX_TOTAL = 8 * 1024**3  # 8 GiB unpacked: above the largest real catalogs
DEFAULT_MAX_ENTRIES = 100_000
# File systems refuse a name part over 255 bytes (ENAMETOOLONG) and a path over PATH_MAX (4096 with
# the unpack folder's own path in front); pathlib's mkdir(parents=True) even recurses once per level.
# Real exchange folders are a few levels of short names.
_MAX_PART = 255
_MAX_PATH = 1024
_CHUNK = 1 << 20


def _entry_name(info: zipfile.ZipInfo) -> str:
    """1C's archiver writes Russian names in cp866 without the UTF-8 flag."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("cp866")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name


def _safe_relative(name: str) -> PurePosixPath:
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise StructuralError(f"the archive holds an absolute path '{name}'; it is refused")
    if any(part == ".." for part in path.parts):
        raise StructuralError(f"the archive holds a path that climbs out of its folder ('{name}'); it is refused")
    if len(normalized.encode("utf-8", "surrogateescape")) > _MAX_PATH or any(
            len(part.encode("utf-8", "surrogateescape")) > _MAX_PART for part in path.parts):
        raise StructuralError(f"the archive holds a path too long to unpack ('{name[:80]}...', {len(normalized)} "
                              f"characters; at most {_MAX_PART} bytes a name and {_MAX_PATH} a path); it is refused")
    return path


def extract(archive: Path, target: Path, *, max_total: int = DEFAULT_MAX_TOTAL,
            max_entries: int = DEFAULT_MAX_ENTRIES) -> list[Path]:
    """Unpack ``archive`` into ``target`` (which must be empty) and return the files written."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise StructuralError(f"this is not a readable zip archive: {exc}") from None
    except UnicodeDecodeError as exc:  # an entry flagged UTF-8 whose name is not: zipfile decodes it strictly
        raise StructuralError(f"the archive names an entry in bytes that are not UTF-8 although it says they "
                              f"are ({exc.object[:80]!r}); it is refused") from None
    # An OSError here is our disk or the source (gone, unreadable), not the archive: it goes up as
    # it is, so the file is taken again later instead of being quarantined for a fault of ours.
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise StructuralError(f"the archive holds {len(infos)} entries, more than the limit of {max_entries}")
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        declared = 0
        for info in infos:
            name = _entry_name(info)
            relative = _safe_relative(name)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise StructuralError(f"the archive holds a symbolic link '{name}'; links are refused")
            if info.flag_bits & 0x1:
                raise StructuralError(f"the archive entry '{name}' is encrypted")
            declared += info.file_size
            if declared > max_total:
                raise StructuralError(f"the archive would unpack to more than {max_total} bytes; it is refused")
            plan.append((info, relative))
        written: list[Path] = []
        total = 0
        try:
            for info, relative in plan:
                destination = target.joinpath(*relative.parts)
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(destination, "xb") as sink:
                    while chunk := _read(source):
                        total += len(chunk)
                        if total > max_total:
                            raise StructuralError(f"the archive unpacks to more than {max_total} bytes; it is refused")
                        sink.write(chunk)
                written.append(destination)
        except FileExistsError as exc:
            _empty(target)
            raise StructuralError(f"the archive holds the same file twice: {exc.filename}") from None
        except NotImplementedError as exc:
            _empty(target)
            raise StructuralError(f"the archive uses a compression method this bridge cannot unpack ({exc}); "
                                  "ask for a zip made with the ordinary Deflate method") from None
        except _DAMAGED as exc:
            _empty(target)
            raise StructuralError(f"the archive is damaged: {exc or type(exc).__name__}") from None
        except BaseException:  # our disk (full, too large a file), a stop: nothing half-unpacked stays
            _empty(target)
            raise
        return written


def _read(source: IO[bytes]) -> bytes:
    """The next chunk of an entry. bz2 reports a broken stream as an OSError without errno; one with an
    errno is the disk under the archive, which is not the archive's fault."""
    try:
        return source.read(_CHUNK)
    except OSError as exc:
        if exc.errno is None:
            raise zipfile.BadZipFile(str(exc)) from None
        raise


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
