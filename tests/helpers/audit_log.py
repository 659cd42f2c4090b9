"""The apiserver's audit log, read incrementally.

The log grows for the life of the local platform (``.run/logs/audit.log``, rotated by
the apiserver at 100 MB: the file is renamed ``audit-<time>.log`` and a new one begun).
Reading it whole for every check slows the suite down as it grows, so
:class:`AuditReader` remembers how far it read each path and reads only what was
appended since: after a rotation it finishes the renamed file (found by its inode)
and starts the new one from the top; a file cut shorter than the offset is read anew.
A file is known by its inode and first bytes (a deleted file's inode may be reused);
a line still being written is left for the next read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Entry = dict[str, Any]
WRITE_VERBS = ("create", "update", "patch", "delete")


HEAD = 256  # bytes that tell one file from another (its first entry's auditID, time)


@dataclass
class _Position:
    inode: int
    head: bytes  # the file's first bytes when last read
    offset: int

    def same_file(self, path: Path, inode: int) -> bool:
        """Whether ``path`` is still the file read last (an inode alone may be reused)."""
        return inode == self.inode and _head(path).startswith(self.head)


def _head(path: Path) -> bytes:
    with path.open("rb") as log:
        return log.read(HEAD)


@dataclass
class AuditReader:
    """Reads audit logs from where it left off, per path."""

    _positions: dict[Path, _Position] = field(default_factory=dict)

    def skip_to_end(self, path: Path) -> None:
        """Read nothing written so far: the next :meth:`read` starts at the current end."""
        try:
            stat = path.stat()
            self._positions[path] = _Position(stat.st_ino, _head(path), stat.st_size)
        except FileNotFoundError:
            return

    def read(self, path: Path) -> Iterator[Entry]:
        """The entries written to ``path`` since the last read (all of them the first time)."""
        try:
            stat = path.stat()
            last = self._positions.get(path)
            if last is not None and not last.same_file(path, stat.st_ino):
                rotated = _renamed(path, last)
                if rotated is not None:
                    yield from (entry for entry, _ in _entries(rotated, last.offset))
                last = None
            offset = 0 if last is None or stat.st_size < last.offset else last.offset
            position = _Position(stat.st_ino, _head(path), offset)
        except FileNotFoundError:
            return
        self._positions[path] = position
        for entry, end in _entries(path, offset):
            position.offset = end
            yield entry


def _renamed(path: Path, last: _Position) -> Path | None:
    """The former ``path``, renamed ``<stem>-<time><suffix>`` by a rotation, if still there."""
    for candidate in path.parent.glob(f"{path.stem}-*{path.suffix}"):
        with contextlib.suppress(FileNotFoundError):
            if last.same_file(candidate, candidate.stat().st_ino):
                return candidate
    return None


def _entries(path: Path, offset: int) -> Iterator[tuple[Entry, int]]:
    """Each complete line's entry from ``offset`` on, with the offset after its line."""
    with path.open("rb") as log:
        log.seek(offset)
        data = log.read()
    complete = data.rfind(b"\n") + 1  # 0: not even one whole line yet
    position = offset
    for line in data[:complete].splitlines(keepends=True):
        position += len(line)
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}: no audit entry at byte {position - len(line)}") from exc
        yield entry, position


def writes_to(entries: Iterable[Entry], resource: str, namespace: str, name: str) -> list[str]:
    """The successful writes to one object, in order: ``verb`` or ``verb/subresource``."""
    writes = []
    for entry in entries:
        ref = entry.get("objectRef") or {}
        if (
            ref.get("resource") == resource
            and ref.get("namespace") == namespace
            and ref.get("name") == name
            and entry.get("stage") == "ResponseComplete"
            and 200 <= (entry.get("responseStatus") or {}).get("code", 0) < 300
            and entry.get("verb") in WRITE_VERBS
        ):
            sub = ref.get("subresource")
            writes.append(f"{entry['verb']}/{sub}" if sub else str(entry["verb"]))
    return writes


@dataclass
class NamespaceAudit:
    """One namespace's audit entries from the moment this was made on (a test's view)."""

    path: Path
    namespace: str
    reader: AuditReader = field(default_factory=AuditReader)
    entries: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader.skip_to_end(self.path)

    def refresh(self) -> list[Entry]:
        """Read what was appended; this namespace's entries so far."""
        self.entries.extend(
            e
            for e in self.reader.read(self.path)
            if (e.get("objectRef") or {}).get("namespace") == self.namespace
        )
        return self.entries

    def writes_to(self, resource: str, name: str) -> list[str]:
        return writes_to(self.refresh(), resource, self.namespace, name)
