"""Positive signals from Midtrans' side of a saga test, to wait on before a check.

A negative check ("nothing was settled") means something only once everything that
could still change it has happened: Midtrans (the sandbox) has reached the state the
test expects, every notification it recorded for the order has been delivered to the
test's listener (or given up), and the operator's payment inbox has acknowledged all
that reached the payment stream. :func:`midtrans_quiet` waits for exactly that.
"""

from __future__ import annotations

from typing import Any

from tests.helpers.waiting import eventually
from tests.integration.saga_fixtures import SagaEnv

INBOX = "checkout-operator"  # the operator's durable on the payment stream
UNDELIVERED = ("queued", "retrying")  # a notification's states before its last word


async def wait_sandbox(saga: SagaEnv, order: str, *statuses: str) -> dict[str, Any]:
    """Midtrans' record of ``order`` once its transaction_status is one of ``statuses``."""
    state: dict[str, Any] = {}

    async def reached() -> bool:
        state.clear()
        state.update(await saga.sandbox_state(order))
        return state.get("transaction_status") in statuses

    await eventually(reached, within=30, interval=0.05, failure=lambda: f"{order}: {state}")
    return state


async def inbox_drained(saga: SagaEnv) -> bool:
    """The operator's inbox has acknowledged every message on the payment stream."""
    announcer = saga.operator.deps.announcer
    stream = announcer.topology.payment_stream
    last = (await announcer.js.stream_info(stream)).state.last_seq
    info = await announcer.js.consumer_info(stream, INBOX)
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    return (floor or 0) >= last and not info.num_pending and not info.num_ack_pending


async def midtrans_quiet(saga: SagaEnv, order: str) -> dict[str, Any]:
    """Midtrans' record of ``order`` once each of its notifications had its last word
    and the operator's inbox has taken in all that was delivered."""
    state: dict[str, Any] = {}

    async def quiet() -> bool:
        state.clear()
        state.update(await saga.sandbox_state(order))
        pending = [n for n in state["notifications"] if n["state"] in UNDELIVERED]
        return not pending and await inbox_drained(saga)

    await eventually(quiet, within=30, interval=0.05, failure=lambda: f"{order}: {state}")
    return state
