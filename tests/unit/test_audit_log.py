"""Reading the apiserver's audit log incrementally (tests/helpers/audit_log.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.audit_log import AuditReader, NamespaceAudit, writes_to


def entry(
    verb: str,
    name: str = "order-1",
    *,
    namespace: str = "t-1",
    resource: str = "checkouts",
    subresource: str | None = None,
    code: int = 200,
    stage: str = "ResponseComplete",
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "namespace": namespace, "name": name}
    if subresource:
        ref["subresource"] = subresource
    return {"verb": verb, "stage": stage, "objectRef": ref, "responseStatus": {"code": code}}


def append(path: Path, *entries: dict[str, Any], tail: bytes = b"") -> None:
    with path.open("ab") as log:
        for e in entries:
            log.write(json.dumps(e).encode() + b"\n")
        log.write(tail)


def verbs(entries: Any) -> list[str]:
    return [e["verb"] for e in entries]


def test_reads_only_what_was_appended_since_the_last_read(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, entry("create"), entry("get"))
    reader = AuditReader()
    assert verbs(reader.read(log)) == ["create", "get"]
    assert verbs(reader.read(log)) == []
    append(log, entry("patch"))
    assert verbs(reader.read(log)) == ["patch"]


def test_a_line_still_being_written_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    line = json.dumps(entry("update")).encode()
    append(log, entry("create"), tail=line[:10])
    reader = AuditReader()
    assert verbs(reader.read(log)) == ["create"]
    append(log, tail=line[10:] + b"\n")
    assert verbs(reader.read(log)) == ["update"]


def test_skip_to_end_and_each_path_on_its_own(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    append(a, entry("create"))
    append(b, entry("delete"))
    reader = AuditReader()
    reader.skip_to_end(a)
    reader.skip_to_end(tmp_path / "missing.log")  # not there yet: read from its start later
    assert verbs(reader.read(a)) == []
    assert verbs(reader.read(b)) == ["delete"]
    append(a, entry("patch"))
    append(tmp_path / "missing.log", entry("get"))
    assert verbs(reader.read(a)) == ["patch"]
    assert verbs(reader.read(tmp_path / "missing.log")) == ["get"]


def test_rotation_finishes_the_renamed_file_then_reads_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, entry("create"))
    reader = AuditReader()
    assert verbs(reader.read(log)) == ["create"]
    append(log, entry("patch"))  # after the last read, before the rotation
    log.rename(tmp_path / "audit-2026-01-01T00-00-00.000.log")  # as the apiserver rotates
    append(log, entry("delete"))
    assert verbs(reader.read(log)) == ["patch", "delete"]
    assert verbs(reader.read(log)) == []


def test_a_rotated_file_already_removed_loses_only_its_tail(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, entry("create"))
    reader = AuditReader()
    assert verbs(reader.read(log)) == ["create"]
    log.unlink()
    append(log, entry("delete"))
    assert verbs(reader.read(log)) == ["delete"]


def test_a_truncated_file_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, entry("create"), entry("patch"))
    reader = AuditReader()
    assert len(list(reader.read(log))) == 2
    log.write_bytes(b"")  # same inode, cut short
    append(log, entry("delete"))
    assert verbs(reader.read(log)) == ["delete"]


def test_a_garbled_line_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, entry("create"), tail=b"{not json\n")
    with pytest.raises(ValueError, match=r"audit.log: no audit entry at byte \d+"):
        list(AuditReader().read(log))


def test_writes_to_keeps_successful_completed_writes_to_the_one_object() -> None:
    entries = [
        entry("create"),
        entry("get"),  # a read
        entry("patch", subresource="status"),
        entry("patch", stage="RequestReceived"),  # not completed yet
        entry("update", code=409),  # refused
        entry("patch", name="order-2"),  # another object
        entry("patch", namespace="t-2"),  # another namespace
        entry("patch", resource="events"),  # another resource
        {"verb": "delete", "stage": "ResponseComplete"},  # no objectRef
        entry("delete"),
    ]
    assert writes_to(entries, "checkouts", "t-1", "order-1") == [
        "create",
        "patch/status",
        "delete",
    ]


def test_namespace_audit_sees_this_namespace_from_its_start_on(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    append(log, entry("create"))  # before the test began
    audit = NamespaceAudit(log, "t-1")
    append(log, entry("create", namespace="t-2"), entry("patch", subresource="status"))
    assert audit.writes_to("checkouts", "order-1") == ["patch/status"]
    append(log, entry("delete"))
    assert audit.writes_to("checkouts", "order-1") == ["patch/status", "delete"]
    assert all(e["objectRef"]["namespace"] == "t-1" for e in audit.entries)
