"""The whole saga, in-process where possible and real everywhere.

Real apiserver (the platform), real Postgres/Redis/NATS, the real User and
Product services (gRPC), the Product event consumer, the Midtrans sandbox as its
own process, and the operator (kopf + reconciler + poller) and the arq expiry
worker running in the test's event loop so tests can stop and start them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, overload

import asyncpg
import httpx
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker

from checkout_operator.actions import Deps
from checkout_operator.app import build_deps, kube_api_client
from checkout_operator.clients.kube import KubeCheckouts
from checkout_operator.final_events import FinalEvents
from checkout_operator.handlers import KopfWatcher
from checkout_operator.inbox import PaymentInbox
from checkout_operator.poller import PaymentPoller
from checkout_operator.reconciler import Reconciler
from checkout_operator.returns import PaymentReturns
from checkout_operator.settings import OperatorSettings
from checkout_operator.worker import expire_checkout
from midtrans import MidtransConfig
from product_service.consumer import EventConsumer
from saga_kit.events import Topology, ensure_streams
from saga_kit.nats_access import Role
from saga_kit.settings import Secret
from tests.conftest import Platform
from tests.helpers.processes import free_port, python_module
from tests.integration.product_fixtures import ProductEnv
from tests.integration.user_fixtures import UserEnv

SANDBOX_KEY = "SB-Mid-server-saga-tests"
EXPIRY_WORKER = "expiry-worker"  # the name of the arq worker's task


@pytest.fixture(scope="session")
def midtrans_sandbox() -> Iterator[str]:
    """The Midtrans sandbox as a real process; its base URL."""
    port = free_port()
    env = {"MIDTRANS_SANDBOX_SERVER_KEY": SANDBOX_KEY, "MIDTRANS_SANDBOX_PORT": str(port)}
    with python_module(
        "midtrans_sandbox", port=port, health_path="/_sandbox/health", env=env
    ) as proc:
        yield proc.base_url


@dataclass
class Operator:
    """One running operator (kopf watch + reconciler + poller) and expiry worker."""

    deps: Deps
    reconciler: Reconciler
    stop: asyncio.Event
    tasks: list[asyncio.Task[Any]]
    stack: contextlib.AsyncExitStack
    watcher: KopfWatcher

    async def shutdown(self) -> None:
        self.stop.set()
        for task in self.tasks:
            if task.get_name() == EXPIRY_WORKER:
                task.cancel()  # the arq worker runs until cancelled
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 20)
        await self.stack.aclose()


@dataclass
class SagaEnv:
    platform: Platform
    namespace: str
    settings: OperatorSettings
    midtrans_url: str
    users: UserEnv
    products: ProductEnv
    kube: KubeCheckouts
    user_id: str = ""
    operators: list[Operator] = field(default_factory=list)

    @property
    def operator(self) -> Operator:
        return self.operators[-1]

    async def start_operator(self, *, worker: bool = True, **overrides: Any) -> Operator:
        """Start an operator with ``overrides`` of the settings; ``worker=False`` runs
        no arq expiry worker (expiry jobs stay queued: only the operator's own deadline
        can expire a checkout)."""
        key = overrides.pop("midtrans_key", None) or SANDBOX_KEY
        grace = overrides.pop("final_event_grace", dt.timedelta(seconds=2))
        midtrans_url = overrides.pop("midtrans_url", None) or self.midtrans_url
        settings = replace(self.settings, **overrides)
        stack = contextlib.AsyncExitStack()
        deps = await build_deps(
            settings,
            stack,
            midtrans_config=MidtransConfig(
                server_key=key, snap_base_url=midtrans_url, core_base_url=midtrans_url
            ),
        )
        reconciler = Reconciler(deps, workers=4)
        watcher = KopfWatcher(reconciler, self.namespace)
        watcher.start()
        stack.push_async_callback(watcher.stop)
        stop = asyncio.Event()
        poller = PaymentPoller(reconciler)
        inbox = PaymentInbox(reconciler, deps.announcer.js, deps.announcer.topology)
        await inbox.ensure()
        tasks = [
            asyncio.create_task(reconciler.run(stop), name="reconciler"),
            asyncio.create_task(poller.run(stop, tick=0.05), name="poller"),
            asyncio.create_task(inbox.run(stop), name="inbox"),
            asyncio.create_task(
                PaymentReturns(reconciler, poller.bucket, tick=0.1).run(stop), name="returns"
            ),
            asyncio.create_task(
                FinalEvents(deps, tick=0.2, grace=grace).run(stop), name="final-events"
            ),
        ]
        if worker:
            arq_worker = Worker(
                functions=[expire_checkout],
                redis_settings=RedisSettings.from_dsn(settings.redis_url.value),
                queue_name=settings.arq_queue,
                ctx={"deps": deps},
                handle_signals=False,
                poll_delay=0.1,
                max_tries=20,
            )
            stack.push_async_callback(arq_worker.close)
            tasks.append(asyncio.create_task(arq_worker.async_run(), name=EXPIRY_WORKER))
        operator = Operator(deps, reconciler, stop, tasks, stack, watcher)
        self.operators.append(operator)
        return operator

    # --- acting as a shop and a buyer ---------------------------------------------------

    @overload
    async def create(
        self,
        name: str | None = None,
        items: list[tuple[str, int, int]] | None = None,
        *,
        check: Literal[True] = True,
        **spec: Any,
    ) -> str: ...

    @overload
    async def create(
        self,
        name: str | None = None,
        items: list[tuple[str, int, int]] | None = None,
        *,
        check: Literal[False],
        **spec: Any,
    ) -> subprocess.CompletedProcess[str]: ...

    async def create(
        self,
        name: str | None = None,
        items: list[tuple[str, int, int]] | None = None,
        *,
        check: bool = True,
        **spec: Any,
    ) -> str | subprocess.CompletedProcess[str]:
        """Create a Checkout with kubectl; its name. With ``check=False`` a refusal is no
        error: kubectl's result is returned instead, for tests of what the CRD refuses."""
        name = name or f"order-{uuid.uuid4().hex[:10]}"
        body = {
            "apiVersion": "checkout.saga.dev/v1alpha1",
            "kind": "Checkout",
            "metadata": {"name": name},
            "spec": {
                "userId": self.user_id,
                "items": [
                    {"productId": p, "unitPrice": price, "quantity": q}
                    for p, price, q in (items or [])
                ],
                **spec,
            },
        }
        result = self.platform.kubectl(
            "create", "-f", "-", namespace=self.namespace, stdin=json.dumps(body), check=check
        )
        return name if check else result

    async def get(self, name: str) -> dict[str, Any] | None:
        return await self.kube.get(self.namespace, name)

    async def wait_for(
        self, name: str, check: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        body: dict[str, Any] | None = None
        while asyncio.get_running_loop().time() < deadline:
            body = await self.get(name)
            if body is not None and check(body):
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name} did not get there in {within}s; last seen: {body}")

    async def wait_phase(self, name: str, *phases: str, within: float = 30.0) -> dict[str, Any]:
        return await self.wait_for(
            name, lambda b: (b.get("status") or {}).get("phase") in phases, within
        )

    async def midtrans_order(self, name: str) -> str:
        """The Midtrans order id of the checkout's payment page (``name`` or ``name~n``)."""
        conn = await asyncpg.connect(self.platform.postgres_dsn)
        try:
            order = await conn.fetchval(
                f'SELECT midtrans_order_id FROM "{self.settings.db_schema}".checkouts'
                " WHERE order_id = $1",
                name,
            )
        finally:
            await conn.close()
        assert order, f"{name} has no payment page"
        return str(order)

    async def sandbox(self, order: str, action: str, **body: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.midtrans_url) as http:
            return await http.post(f"/_sandbox/transactions/{order}/{action}", json=body or None)

    async def _sandbox_transaction(self, order: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.midtrans_url) as http:
            return await http.get(f"/_sandbox/transactions/{order}")

    async def sandbox_state(self, order: str) -> dict[str, Any]:
        data: dict[str, Any] = (await self._sandbox_transaction(order)).json()
        return data

    async def sandbox_state_or_none(self, order: str) -> dict[str, Any] | None:
        """The sandbox's record of a Snap order; None if Midtrans never got it."""
        reply = await self._sandbox_transaction(order)
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data

    def warning_reasons(self, name: str) -> list[str]:
        """The reasons of the Warning Events about this Checkout."""
        return self.platform.kubectl(
            "get",
            "events",
            f"--field-selector=involvedObject.name={name},type=Warning",
            "-o",
            "jsonpath={.items[*].reason}",
            namespace=self.namespace,
        ).stdout.split()

    def api_writes(self, name: str) -> list[str]:
        """Successful writes to this Checkout recorded by the apiserver's audit log."""
        writes = []
        log = self.platform.cfg.run_dir / "logs" / "audit.log"
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            ref = entry.get("objectRef") or {}
            if (
                ref.get("resource") == "checkouts"
                and ref.get("namespace") == self.namespace
                and ref.get("name") == name
                and entry.get("stage") == "ResponseComplete"
                and 200 <= (entry.get("responseStatus") or {}).get("code", 0) < 300
                and entry.get("verb") in ("create", "update", "patch", "delete")
            ):
                writes.append(
                    f"{entry['verb']}{'/' + ref['subresource'] if ref.get('subresource') else ''}"
                )
        return writes


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The status condition of this type on a Checkout body, if there is one."""
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


@pytest.fixture
async def saga(
    platform: Platform,
    namespace: str,
    db_schema: str,
    service_token: Secret,
    midtrans_sandbox: str,
    user_env: UserEnv,
    product_env: ProductEnv,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[SagaEnv]:
    monkeypatch.setenv("KUBECONFIG", str(platform.kubeconfig))
    tag = uuid.uuid4().hex[:8]
    topology = Topology.namespaced(f"s{tag}")
    settings = OperatorSettings(
        database_url=Secret(platform.postgres_dsn),
        db_schema=f"{db_schema}_op",
        namespace=namespace,
        nats_url=platform.cfg.nats_url,
        nats_credentials=platform.nats_credentials(Role.OPERATOR),
        events_namespace=f"s{tag}",
        redis_url=Secret(platform.cfg.redis_url),
        user_service=user_env.grpc_target,
        product_service=product_env.target,
        service_token=service_token,
        ttl_after_finished=None,
        poll_interval=0.3,
        poll_rate=100.0,
        poll_min_age=0.0,
        arq_queue=f"arq:test:{tag}",
        payment_setup_deadline=dt.timedelta(seconds=3),
    )
    api = await kube_api_client()
    env = SagaEnv(
        platform, namespace, settings, midtrans_sandbox, user_env, product_env, KubeCheckouts(api)
    )
    env.user_id, _ = await user_env.token_for(f"buyer{tag}")
    admin = await platform.nats()  # creates the streams the way the operator would
    await ensure_streams(admin.jetstream(), topology)
    nc = await platform.nats(Role.PRODUCT_SERVICE)
    consumer = EventConsumer(nc.jetstream(), product_env.pool, topology, name="products")
    await consumer.ensure()
    consumer_stop = asyncio.Event()
    consumer_task = asyncio.create_task(consumer.run(consumer_stop, batch=16))
    yield env
    for operator in env.operators:
        if not operator.stop.is_set():
            await operator.shutdown()
    consumer_stop.set()
    await asyncio.wait_for(consumer_task, 10)
    js = admin.jetstream()
    for name in topology.streams:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
    await nc.close()
    await admin.close()
    await api.close()
    conn = await asyncpg.connect(platform.postgres_dsn)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{db_schema}_op" CASCADE')
    await conn.close()
