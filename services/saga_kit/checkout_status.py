"""How a Checkout's ``status`` is written: history, conditions, and the write that
settles it.

Pure (no I/O, ``now`` passed in). The operator writes every step of the saga with
these; the webhook listener writes the one step it may take itself, a settlement
Midtrans confirmed (``settlement_patch``), so a settlement reads the same whoever
wrote it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from .checkout_resource import Phase

HISTORY_LIMIT = 20
SETTLED_REASON = "Paid"
SETTLED_MESSAGE = "payment settled"


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def with_history(
    history: Sequence[Mapping[str, Any]], entries: Sequence[tuple[Phase, str]], now: dt.datetime
) -> list[dict[str, Any]]:
    """Append phase changes, keeping the newest HISTORY_LIMIT."""
    merged = [dict(h) for h in history] + [
        {"phase": phase.value, "at": timestamp(now), "reason": reason} for phase, reason in entries
    ]
    return merged[-HISTORY_LIMIT:]


def with_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """Set one condition (metav1.Condition); lastTransitionTime moves only when the
    status flips."""
    value = "True" if status else "False"
    result: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            result.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != value
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": timestamp(now)
                if changed
                else cond.get("lastTransitionTime", timestamp(now)),
                "observedGeneration": generation,
            }
        )
    if not found:
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": timestamp(now),
                "observedGeneration": generation,
            }
        )
    return result


def status_patch(
    body: Mapping[str, Any],
    now: dt.datetime,
    phase: Phase,
    entered: Sequence[tuple[Phase, str]],
    conditions: Sequence[tuple[str, bool, str, str]],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The merge patch of ``status`` that moves the resource to ``phase``."""
    current = body.get("status") or {}
    generation = int(body["metadata"].get("generation", 1))
    conds = current.get("conditions") or []
    for type_, value, reason, message in conditions:
        conds = with_condition(conds, type_, value, reason, message, now, generation)
    return {
        "phase": phase.value,
        "observedGeneration": generation,
        "history": with_history(current.get("history") or [], entered, now),
        "conditions": conds,
        **extra,
    }


def settlement_patch(
    body: Mapping[str, Any], now: dt.datetime, payment: Mapping[str, Any]
) -> dict[str, Any]:
    """AwaitingPayment -> Settled. ``payment``: the fields of the verified status.

    A finished checkout hands out no payment link (null removes it in a merge patch).
    """
    return status_patch(
        body,
        now,
        Phase.SETTLED,
        [(Phase.SETTLED, SETTLED_REASON)],
        [
            ("Paid", True, "Settled", SETTLED_MESSAGE),
            ("Ready", True, "Settled", SETTLED_MESSAGE),
        ],
        {
            "orderId": body["metadata"]["name"],
            "payment": {**payment, "snapToken": None, "redirectUrl": None},
        },
    )
