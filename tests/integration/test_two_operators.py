"""Two operator processes against one namespace: only the Lease holder acts.

Without the Lease both reconcile every new checkout, both ask Midtrans for a payment
page, and the journal may keep the page the buyer never sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from checkout_operator.readmodel import midtrans_order_id
from tests.integration.saga_fixtures import SagaEnv
from tests.integration.test_saga_crash import metric, operator_process, wait_leading

CHECKOUTS = 8


async def extra_snap_orders(saga: SagaEnv, name: str) -> list[str]:
    """Snap orders the sandbox holds for ``name`` besides the journaled one."""
    journaled = await saga.midtrans_order(name)
    candidates = [
        midtrans_order_id(name, n) for n in range(1, saga.settings.max_payment_attempts + 1)
    ]
    found = []
    for order in candidates:
        if order != journaled and (await saga.sandbox_state_or_none(order)) is not None:
            found.append(order)
    return found


async def test_two_operators_make_one_payment_page_per_checkout_and_only_the_leader_acts(
    saga: SagaEnv,
) -> None:
    product = await saga.products.product(price=1_000, stock=CHECKOUTS * 2)
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(operator_process(saga))
        second = stack.enter_context(operator_process(saga))
        names = [await saga.create(items=[(product, 1_000, 1)]) for _ in range(CHECKOUTS)]
        bodies = [await saga.wait_phase(name, "AwaitingPayment", within=60) for name in names]

        # One Snap order per checkout at Midtrans, and it is the one the buyer is shown.
        for name, body in zip(names, bodies, strict=True):
            assert await extra_snap_orders(saga, name) == [], name
            shown = await saga.sandbox_state_or_none(await saga.midtrans_order(name))
            assert shown is not None
            assert shown["token"] == body["status"]["payment"]["snapToken"]

        # Exactly one of them leads; the other never started acting.
        leading = [await metric(p, "checkout_operator_leader") for p in (first, second)]
        assert sorted(leading) == [0, 1]
        leader, standby = (first, second) if leading[0] == 1 else (second, first)
        assert await metric(standby, "checkout_step_seconds_count") == 0
        assert await metric(standby, "checkout_transitions_total") == 0
        assert "checkout operator started" not in standby.log(lines=10_000)
        assert await metric(leader, "checkout_transitions_total") >= CHECKOUTS

        # A clean stop hands over: the standby takes the lease and carries on.
        leader.process.send_signal(signal.SIGTERM)
        assert leader.process.wait(30) == 0
        await wait_leading(standby)
        order = await saga.midtrans_order(names[0])
        paid = await saga.sandbox(order, "pay", payment_type="bank_transfer")
        assert paid.status_code == 200, paid.text
        await saga.wait_phase(names[0], "Settled", within=60)
        assert await metric(standby, "checkout_transitions_total") >= 1


async def test_an_operator_that_loses_its_lease_stops_and_exits_non_zero(saga: SagaEnv) -> None:
    with operator_process(saga) as proc:
        await wait_leading(proc)
        saga.platform.kubectl(
            "patch",
            "lease",
            "checkout-operator",
            "--type=merge",
            "-p",
            '{"spec": {"holderIdentity": "someone-else"}}',
            namespace=saga.namespace,
        )
        code = await asyncio.to_thread(proc.process.wait, 30)
        assert code == 1, proc.log()
        assert "lost the lease" in proc.log(lines=10_000)
