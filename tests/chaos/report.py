"""The chaos run's report: sagas by kind and ending, faults by kind, mismatches."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.faults import Faults
from tests.chaos.ledger import Facts
from tests.chaos.notifications import Notifications
from tests.chaos.platform import RUN_DIR
from tests.chaos.shoppers import Saga


@dataclass
class Run:
    seed: int
    sagas: list[Saga] = field(default_factory=list)
    faults: Faults | None = None
    notifications: Notifications | None = None
    facts: Facts | None = None  # as last gathered
    found: list[str] = field(default_factory=list)  # mismatches, as last judged
    audit_warnings: list[str] = field(default_factory=list)  # saga-devenv audit's
    audit_checked: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    converged_in: float | None = None  # seconds after the last fault; None: never
    progress: list[tuple[float, int]] = field(default_factory=list)  # (second, mismatches)


def _ending(saga: Saga, facts: Facts | None) -> str:
    row = facts.rows.get(saga.id) if facts else None
    ended = row["phase"] if row else "no record"
    return f"{ended} (deleted)" if saga.deleted else ended


def _counts(counter: Counter[str]) -> list[str]:
    return [f"  {kind:48} {n}" for kind, n in sorted(counter.items())]


def render(run: Run) -> str:
    by_kind: dict[str, Counter[str]] = {}
    for saga in run.sagas:
        by_kind.setdefault(saga.kind, Counter())[_ending(saga, run.facts)] += 1
    lines = [f"chaos run, seed {run.seed} (CHAOS_SEED={run.seed} replays its choices)"]
    lines.append(f"sagas by kind ({len(run.sagas)}), by the ending the read model records:")
    for kind, endings in sorted(by_kind.items()):
        detail = ", ".join(f"{ending} {n}" for ending, n in endings.most_common())
        lines.append(f"  {kind:10} {sum(endings.values()):4}  {detail}")
    if run.faults:
        lines.append(f"faults injected ({sum(run.faults.injected.values())}):")
        lines += _counts(run.faults.injected)
        if run.faults.failed_starts:
            lines.append(
                f"  (app starts that failed and were retried: {len(run.faults.failed_starts)})"
            )
    if run.notifications:
        lines.append("notifications posted again:")
        lines += _counts(run.notifications.posted)
    lines.append("stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in run.timings.items()))
    every = max(1, len(run.progress) // 12)
    samples = [f"{n} at {at:.0f}s" for at, n in run.progress[::every]]
    lines.append("mismatches while converging: " + ", ".join(samples))
    lines.append(
        f"converged {run.converged_in:.1f}s after the last fault"
        if run.converged_in is not None
        else "NOT converged"
    )
    if run.audit_checked:
        checked = ", ".join(f"{n} {kind}" for kind, n in run.audit_checked.items())
        lines.append(f"saga-devenv audit checked {checked}")
    if run.audit_warnings:
        lines.append(f"audit warnings ({len(run.audit_warnings)}):")
        lines += [f"  {w}" for w in run.audit_warnings]
    lines.append(f"mismatches: {len(run.found)}")
    lines += [f"  {m}" for m in run.found]
    if run.found:
        lines.append(f"logs: {RUN_DIR}/logs/ (apps; apiserver: audit.log), {RUN_DIR}/faults.log")
    return "\n".join(lines)
