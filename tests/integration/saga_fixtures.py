"""The whole saga, in-process where possible and real everywhere.

Real apiserver (the platform), real Postgres/Redis/NATS, the real User and
Product services (gRPC), the Product event consumer, the Midtrans sandbox as its
own process, the webhook listener app, and the operator (wired as
``python -m checkout_operator`` wires it) and the arq expiry worker running in the
test's event loop so tests can stop and start them. The sandbox notifies each test's
own listener (Midtrans' X-Override-Notification), as Midtrans would.
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

from checkout_operator.__main__ import Acting, prepare, start_acting
from checkout_operator.actions import Deps
from checkout_operator.clients.kube import KubeCheckouts
from checkout_operator.handlers import KopfWatcher
from checkout_operator.leader import LeaderElector
from checkout_operator.reconciler import Reconciler
from checkout_operator.settings import OperatorSettings
from checkout_operator.worker import expire_checkout
from midtrans import MidtransClient, MidtransConfig
from payment_listener.app import create_app as create_listener
from payment_listener.checkout_feed import watched_checkouts
from payment_listener.known_checkouts import CachedCheckouts
from payment_listener.settling import Settler
from product_service.consumer import EventConsumer
from saga_kit.apiserver import ApiClient
from saga_kit.events import Topology, ensure_streams
from saga_kit.kube import kube_api_client
from saga_kit.nats_access import Role
from saga_kit.serving import http_server
from saga_kit.settings import Secret
from saga_kit.supervise import Readiness
from tests.conftest import Platform
from tests.helpers.audit_log import NamespaceAudit
from tests.helpers.leaks import made_streams
from tests.helpers.processes import free_port, python_module
from tests.helpers.waiting import eventually
from tests.integration.product_fixtures import ProductEnv
from tests.integration.user_fixtures import UserEnv

SANDBOX_KEY = "SB-Mid-server-saga-tests"
LOOPBACK = "127.0.0.1"
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
    """One running operator, wired as ``python -m checkout_operator`` wires it (lease,
    kopf watch, reconciler, poller, payment inbox, returns, final events, sweep), and
    the arq expiry worker (a process of its own in production)."""

    deps: Deps
    reconciler: Reconciler
    acting: Acting
    stack: contextlib.AsyncExitStack
    elector: LeaderElector
    worker: asyncio.Task[Any] | None
    finished: asyncio.Task[bool]

    @property
    def stop(self) -> asyncio.Event:
        return self.acting.stop

    @property
    def watcher(self) -> KopfWatcher:
        return self.acting.watcher

    @property
    def tasks(self) -> list[asyncio.Task[Any]]:
        """The operator's own tasks (each loop, the lease, the watchdog), and the worker."""
        return [*self.acting.tasks, *([self.worker] if self.worker else [])]

    async def shutdown(self) -> None:
        self.stop.set()
        if self.worker is not None:
            self.worker.cancel()  # the arq worker runs until cancelled
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.worker, 20)
        lost = await asyncio.wait_for(self.finished, 20)
        await self.elector.release()  # as main() does: a successor may lead at once
        await self.stack.aclose()
        assert not lost, "the operator lost its lease or a task died while acting"


@dataclass
class SagaEnv:
    platform: Platform
    namespace: str
    settings: OperatorSettings
    midtrans_url: str
    users: UserEnv
    products: ProductEnv
    kube: KubeCheckouts
    audit: NamespaceAudit | None = None  # this test's apiserver writes, read incrementally
    listener_url: str = ""  # this test's webhook listener (the real app, in-process)
    listener_view: CachedCheckouts | None = None  # its Checkouts, as its watch shows them
    user_id: str = ""
    operators: list[Operator] = field(default_factory=list)

    @property
    def operator(self) -> Operator:
        return self.operators[-1]

    async def start_operator(
        self, *, worker: bool = True, notifications: bool = True, **overrides: Any
    ) -> Operator:
        """Start an operator as ``python -m checkout_operator`` does, with ``overrides``
        of the settings.

        ``notifications=False``: Midtrans notifies nobody about this operator's payment
        pages, so payments arrive by polling alone (say why where a test needs that).
        ``worker=False`` runs no arq expiry worker (expiry jobs stay queued: only the
        operator's own deadline can expire a checkout).
        """
        key = overrides.pop("midtrans_key", None) or SANDBOX_KEY
        midtrans_url = overrides.pop("midtrans_url", None) or self.midtrans_url
        settings = replace(self.settings, **overrides)
        stack = contextlib.AsyncExitStack()
        ready = await prepare(
            settings,
            stack,
            midtrans_config=MidtransConfig(
                server_key=key,
                snap_base_url=midtrans_url,
                core_base_url=midtrans_url,
                notification_urls=(self.listener_url,) if notifications else (),
            ),
        )
        stop = asyncio.Event()
        within = 2 * settings.lease_duration  # a predecessor that did not release expires
        if not await asyncio.wait_for(ready.elector.acquire(stop), within):
            raise AssertionError("the operator could not take the lease")
        acting = start_acting(ready, settings, stop, stack, Readiness())
        finished = asyncio.create_task(acting.finish(), name="acting")
        arq_task = None
        if worker:
            arq_worker = Worker(
                functions=[expire_checkout],
                redis_settings=RedisSettings.from_dsn(settings.redis_url.value),
                queue_name=settings.arq_queue,
                ctx={"deps": ready.deps},
                handle_signals=False,
                poll_delay=0.1,
                max_tries=20,
            )
            stack.push_async_callback(arq_worker.close)
            arq_task = asyncio.create_task(arq_worker.async_run(), name=EXPIRY_WORKER)
        operator = Operator(
            ready.deps, ready.reconciler, acting, stack, ready.elector, arq_task, finished
        )
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

    def request_cancel(self, name: str) -> None:
        """Ask for the checkout's cancel as a user does: ``spec.cancelRequested`` by kubectl."""
        self.platform.kubectl(
            "patch",
            "checkout",
            name,
            "--type=merge",
            "-p",
            '{"spec": {"cancelRequested": true}}',
            namespace=self.namespace,
        )

    async def get(self, name: str) -> dict[str, Any] | None:
        return await self.kube.get(self.namespace, name)

    async def wait_for(
        self, name: str, check: Callable[[dict[str, Any]], bool], within: float = 30.0
    ) -> dict[str, Any]:
        seen: dict[str, Any] | None = None

        async def there() -> bool:
            nonlocal seen
            seen = await self.get(name)
            return seen is not None and check(seen)

        await eventually(
            there,
            within=within,
            interval=0.05,
            failure=lambda: f"{name} did not get there; last seen: {seen}",
        )
        assert seen is not None
        return seen

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
        return self.events(name, "Warning")

    def events(self, name: str, type_: str | None = None) -> list[str]:
        """The reasons of the Events (of this type) about this Checkout."""
        selector = f"involvedObject.name={name}" + (f",type={type_}" if type_ else "")
        return self.platform.kubectl(
            "get",
            "events",
            f"--field-selector={selector}",
            "-o",
            "jsonpath={.items[*].reason}",
            namespace=self.namespace,
        ).stdout.split()

    def api_writes(self, name: str) -> list[str]:
        """Successful writes to this Checkout recorded by the apiserver's audit log."""
        assert self.audit is not None
        return self.audit.writes_to("checkouts", name)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The status condition of this type on a Checkout body, if there is one."""
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


@contextlib.asynccontextmanager
async def listener_settler(
    api: ApiClient, midtrans: MidtransClient, namespace: str
) -> AsyncIterator[tuple[Settler, CachedCheckouts]]:
    """The listener's settling part as ``python -m payment_listener`` builds it, and
    its view of the Checkouts (fed by its watch)."""
    async with watched_checkouts(api, namespace) as checkouts:
        yield Settler(checkouts, midtrans.status, namespace), checkouts


@contextlib.asynccontextmanager
async def webhook_listener(
    platform: Platform, topology: Topology, settler: Settler | None = None
) -> AsyncIterator[str]:
    """The real webhook listener app for this test's streams; its notification URL."""
    nc = await platform.nats(Role.PAYMENT_LISTENER)
    port = free_port()
    app = create_listener(SANDBOX_KEY, nc.jetstream(), topology, settler)
    server = http_server(app, LOOPBACK, port)
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or serving.done(), within=10)
        if serving.done():
            serving.result()
        yield f"http://{LOOPBACK}:{port}/midtrans/notifications"
    finally:
        server.should_exit = True
        await serving
        await nc.close()


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
    made_streams(*topology.streams)
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
        late_watch_interval=0.3,
        arq_queue=f"arq:test:{tag}",
        payment_setup_deadline=dt.timedelta(seconds=3),
        workers=4,
        lease_namespace=namespace,
        lease_duration=6.0,
        lease_renew_every=2.0,
        # The production loops, looking more often.
        poll_tick=0.05,
        returns_tick=0.1,
        final_event_tick=0.2,
        final_event_grace=dt.timedelta(seconds=2),
        sweep_every=1.0,
    )
    api = await kube_api_client()
    env = SagaEnv(
        platform, namespace, settings, midtrans_sandbox, user_env, product_env, KubeCheckouts(api)
    )
    env.audit = NamespaceAudit(platform.audit_log, namespace)
    env.user_id, _ = await user_env.token_for(f"buyer{tag}")
    admin = await platform.nats()  # creates the streams the way the operator would
    await ensure_streams(admin.jetstream(), topology)
    listener_midtrans = MidtransClient(
        MidtransConfig(server_key=SANDBOX_KEY, core_base_url=midtrans_sandbox)
    )
    settling = listener_settler(api, listener_midtrans, namespace)
    settler, env.listener_view = await settling.__aenter__()
    listener = webhook_listener(platform, topology, settler)
    env.listener_url = await listener.__aenter__()
    nc = await platform.nats(Role.PRODUCT_SERVICE)
    consumer = EventConsumer(nc.jetstream(), product_env.pool, topology, name="products")
    await consumer.ensure()
    consumer_stop = asyncio.Event()
    consumer_task = asyncio.create_task(consumer.run(consumer_stop, batch=16))
    yield env
    for operator in env.operators:
        if not operator.stop.is_set():
            await operator.shutdown()
    await listener.__aexit__(None, None, None)
    await settling.__aexit__(None, None, None)
    await listener_midtrans.aclose()
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
