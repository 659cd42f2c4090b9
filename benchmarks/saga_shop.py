"""The benchmark's buyers and seller, over the system's own doors.

Accounts come from the User service's REST API (register, log in); scrypt makes each
cost about a quarter of a second of CPU, so the bench keeps its accounts (named
``sagabench-*``, password below, local only) in ``<run>/bench/users.json`` and reuses
them across runs, logging in again only when a token is about to expire. The User
service has no way to delete an account: the prefix is how to tell them apart.
Products are listed by one owner and deleted after the run. Checkouts go through
the REST API, payment through the sandbox's customer control, and the bench learns
how each Checkout goes from one watch of its own on the namespace (no GETs).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from saga_devenv import apps
from saga_devenv.config import DevConfig
from saga_kit.checkout_resource import GROUP, PLURAL, TERMINAL, VERSION

PREFIX = "sagabench-"
PASSWORD = "sagabench-passw0rd"  # noqa: S105 (local accounts of the bench only)
USERS = f"http://127.0.0.1:{apps.USER_HTTP}/api/v1"
PRODUCTS = f"http://127.0.0.1:{apps.PRODUCT_HTTP}/api/v1"
API = f"http://127.0.0.1:{apps.CHECKOUT_API}/api/v1"
SANDBOX = f"http://127.0.0.1:{apps.SANDBOX}"
NAMESPACE = "default"  # where the REST API creates Checkouts (devenv/saga_devenv/apps.py)
USER_LABEL = "checkout.saga.dev/user"
TOKEN_MARGIN = 1800.0  # log in again when a token has less than this left
REGISTERING = 4  # concurrent registrations: scrypt keeps a core busy each


@dataclass
class Account:
    username: str
    user_id: str
    token: str
    expires_at: float  # unix time

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _expiry(login: dict[str, Any]) -> float:
    return time.time() + float(login.get("expires_in", 3600))


class Accounts:
    """The bench's buyers, kept across runs in ``<run>/bench/users.json``."""

    def __init__(self, cfg: DevConfig, http: httpx.AsyncClient) -> None:
        self._path = cfg.run_dir / "bench" / "users.json"
        self._http = http
        self.all: list[Account] = []
        if self._path.exists():
            self.all = [Account(**a) for a in json.loads(self._path.read_text())]
        self._next = 0

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._path.write_text(json.dumps([a.__dict__ for a in self.all]))
        self._path.chmod(0o600)

    async def _login(self, username: str) -> dict[str, Any]:
        reply = await self._http.post(
            f"{USERS}/auth/login", json={"username": username, "password": PASSWORD}
        )
        reply.raise_for_status()
        return dict(reply.json())

    async def _register(self) -> Account:
        name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
        reply = await self._http.post(
            f"{USERS}/users",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        )
        reply.raise_for_status()
        login = await self._login(name)
        return Account(name, str(reply.json()["id"]), login["access_token"], _expiry(login))

    async def _refresh(self, account: Account) -> None:
        login = await self._login(account.username)
        account.token, account.expires_at = login["access_token"], _expiry(login)

    async def ensure(self, count: int) -> float:
        """At least ``count`` accounts with fresh tokens; the seconds it took."""
        began = time.monotonic()
        gate = asyncio.Semaphore(REGISTERING)

        async def fresh(account: Account) -> None:
            async with gate:
                await self._refresh(account)

        async def new() -> None:
            async with gate:
                self.all.append(await self._register())

        stale = [a for a in self.all if a.expires_at - time.time() < TOKEN_MARGIN]
        if self.all and not stale and not await self._accepted(self.all[0]):
            stale = list(self.all)  # signed by a key the User service no longer has
        try:
            await asyncio.gather(
                *(fresh(a) for a in stale), *(new() for _ in range(count - len(self.all)))
            )
        finally:
            self._save()
        return time.monotonic() - began

    async def _accepted(self, account: Account) -> bool:
        """Whether the checkout API takes this account's saved token."""
        reply = await self._http.get(
            f"{API}/checkouts",
            params={"page_size": 1},
            headers={"Authorization": f"Bearer {account.token}"},
        )
        return reply.status_code != 401

    @property
    def owner(self) -> Account:
        """The seller of the bench's products (never a buyer)."""
        return self.all[0]

    def take(self) -> Account:
        """The next buyer, round robin (the API's limits are per user)."""
        account = self.all[1 + self._next % (len(self.all) - 1)]
        self._next += 1
        return account

    def by_id(self) -> dict[str, Account]:
        return {a.user_id: a for a in self.all}


@dataclass
class Answer:
    """One POST /checkouts as the buyer saw it."""

    status: int  # HTTP status; 0: no answer (connection error), -1: timed out
    seconds: float  # until the HTTP answer
    body: dict[str, Any] = field(default_factory=dict)
    retry_after: float = 0.0

    @property
    def checkout_id(self) -> str | None:
        """The checkout answered about (a refusal after the saga began names it too)."""
        detail = self.body.get("detail")
        inner = detail.get("checkout") if isinstance(detail, dict) else None
        cid = self.body.get("id") or (inner.get("id") if isinstance(inner, dict) else None)
        return str(cid) if cid else None


class Shop:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self._crowd: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def crowd(self) -> AsyncIterator[None]:
        """POST /checkouts through aiohttp while the block runs, for a crowd of buyers
        at once. httpx's pool looks at every connection it holds each time a request
        takes or gives one back, so 1,000 buyers cost the bench a million such looks: in
        a flash sale the bench itself took most of a core and answers waited for it
        (it is not what the system under test does)."""
        connector = aiohttp.TCPConnector(limit=0)  # one connection per buyer, kept alive
        async with aiohttp.ClientSession(connector=connector) as session:
            self._crowd = session
            try:
                yield
            finally:
                self._crowd = None

    async def product(self, owner: Account, stock: int, price: int = 1000) -> str:
        reply = await self.http.post(
            f"{PRODUCTS}/products",
            json={"name": f"{PREFIX}{uuid.uuid4().hex[:8]}", "price": price, "stock": stock},
            headers=owner.auth,
        )
        reply.raise_for_status()
        return str(reply.json()["id"])

    async def products_of(self, owner: Account) -> list[str]:
        """Every product ``owner`` lists (a run cut short leaves some)."""
        found: list[str] = []
        token: str | None = None
        while True:
            params = {"page_size": "100", **({"page_token": token} if token else {})}
            reply = await self.http.get(
                f"{PRODUCTS}/owner/products", params=params, headers=owner.auth
            )
            reply.raise_for_status()
            page = reply.json()
            found += [str(p["id"]) for p in page["items"]]
            token = page.get("next_page_token")
            if not token:
                return found

    async def delete_product(self, owner: Account, product_id: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            reply = await self.http.delete(f"{PRODUCTS}/products/{product_id}", headers=owner.auth)
            return reply.status_code in (204, 404)
        return False

    async def checkout(
        self, buyer: Account, product_id: str, ttl: int = 900, within: float = 60
    ) -> Answer:
        body = {
            "products": [{"id": product_id, "price": 1000, "quantity": 1}],
            "payment_ttl_seconds": ttl,
        }
        headers = {**buyer.auth, "Idempotency-Key": uuid.uuid4().hex}
        if self._crowd is not None:
            return await _post_aiohttp(self._crowd, body, headers, within)
        began = time.monotonic()
        try:
            reply = await self.http.post(
                f"{API}/checkouts", json=body, headers=headers, timeout=within
            )
        except httpx.TimeoutException:
            return Answer(-1, time.monotonic() - began)
        except httpx.HTTPError:
            return Answer(0, time.monotonic() - began)
        return _answer(reply.status_code, time.monotonic() - began, reply.content, reply.headers)

    async def pay(self, checkout_id: str) -> int:
        reply = await self.http.post(f"{SANDBOX}/_sandbox/transactions/{checkout_id}/pay", json={})
        return reply.status_code

    async def cancel(self, buyer: Account, checkout_id: str) -> int:
        with contextlib.suppress(httpx.HTTPError):
            reply = await self.http.post(
                f"{API}/checkouts/{checkout_id}/cancel", headers=buyer.auth
            )
            return reply.status_code
        return 0


async def _post_aiohttp(
    session: aiohttp.ClientSession, body: dict[str, Any], headers: dict[str, str], within: float
) -> Answer:
    began = time.monotonic()
    try:
        async with session.post(
            f"{API}/checkouts",
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=within),
        ) as reply:
            content = await reply.read()
    except TimeoutError:
        return Answer(-1, time.monotonic() - began)
    except aiohttp.ClientError:
        return Answer(0, time.monotonic() - began)
    return _answer(reply.status, time.monotonic() - began, content, reply.headers)


def _answer(status: int, seconds: float, content: bytes, headers: Any) -> Answer:
    try:
        body = json.loads(content)
    except ValueError:
        body = {}
    retry = float(headers.get("retry-after", 0) or 0)
    return Answer(status, seconds, body if isinstance(body, dict) else {}, retry)


# --- one watch of our own ------------------------------------------------------------


@dataclass
class Seen:
    phase: str | None
    has_link: bool
    user_id: str
    reason: str | None
    midtrans_order: str | None = None  # the Snap order the payment page is for

    @classmethod
    def of(cls, body: dict[str, Any]) -> Seen:
        status = body.get("status") or {}
        payment = status.get("payment") or {}
        return cls(
            status.get("phase"),
            bool(payment.get("redirectUrl")),
            str(body["spec"].get("userId", "")),
            (status.get("failure") or {}).get("reason"),
            payment.get("midtransOrderId"),
        )

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL or self.phase == "Deleted"


Condition = Callable[[Seen], bool]


def has_link(seen: Seen) -> bool:
    return seen.has_link or seen.finished


def finished(seen: Seen) -> bool:
    return seen.finished


def settled(seen: Seen) -> bool:
    return seen.phase == "Settled" or seen.phase == "Deleted"


async def pay_checkout(shop: Shop, watcher: Watcher, checkout_id: str, within: float) -> int:
    """Pay the checkout's payment page, as the buyer on it would: its Snap order, which the
    watch shows, is the checkout's id, or ``<id>~<n>`` when an earlier page's answer was
    lost (``<id>`` then exists at Midtrans too, unpaid: paying it would be stray money)."""
    seen = await watcher.wait(checkout_id, has_link, within)
    order = seen.midtrans_order if seen is not None else None
    return await shop.pay(order or checkout_id)


class Watcher:
    """Every Checkout in the namespace as its last watch event showed it."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self.seen: dict[str, Seen] = {}
        self.added: set[str] = set()  # names whose ADDED event came while watching
        self._waiters: dict[str, list[tuple[Condition, asyncio.Future[Seen]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._listed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._listed.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _update(self, name: str, seen: Seen) -> None:
        self.seen[name] = seen
        waiting = self._waiters.get(name, [])
        for condition, future in list(waiting):
            if condition(seen) and not future.done():
                future.set_result(seen)
                waiting.remove((condition, future))

    async def wait(self, name: str, condition: Condition, within: float) -> Seen | None:
        """The Checkout once ``condition`` holds; None after ``within`` seconds."""
        now = self.seen.get(name)
        if now is not None and condition(now):
            return now
        future: asyncio.Future[Seen] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append((condition, future))
        try:
            return await asyncio.wait_for(future, within)
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(name, [])
            with contextlib.suppress(ValueError):
                waiting.remove((condition, future))
            if not waiting:
                self._waiters.pop(name, None)

    async def wait_all(
        self, names: list[str], condition: Condition, within: float
    ) -> tuple[int, float]:
        """How many of ``names`` reached ``condition`` within ``within`` seconds, and when."""
        began = time.monotonic()
        results = await asyncio.gather(*(self.wait(n, condition, within) for n in names))
        return sum(r is not None for r in results), time.monotonic() - began

    async def _run(self) -> None:
        while True:
            try:
                listed = await self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL
                )
                for body in listed.get("items") or []:
                    self._update(body["metadata"]["name"], Seen.of(body))
                version = listed["metadata"]["resourceVersion"]
                self._listed.set()
                await self._follow(version)
            except ApiException as exc:
                if exc.status != 410:
                    await asyncio.sleep(1)
            except (OSError, TimeoutError):
                await asyncio.sleep(1)

    async def _follow(self, version: str) -> None:
        while True:
            stream = watch.Watch()
            async with stream.stream(
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                NAMESPACE,
                PLURAL,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=240,
            ) as events:
                async for event in events:
                    body = event["raw_object"]
                    if event["type"] == "ERROR":
                        raise ApiException(status=int(body.get("code", 500)))
                    version = stream.resource_version or version
                    if event["type"] == "BOOKMARK":
                        continue
                    name = body["metadata"]["name"]
                    if event["type"] == "ADDED":
                        self.added.add(name)
                    seen = Seen.of(body)
                    if event["type"] == "DELETED":
                        seen.phase = "Deleted"
                    self._update(name, seen)


def open_ones(watcher: Watcher, accounts: Accounts) -> Iterator[tuple[Account, str]]:
    """The bench's buyers' Checkouts that have not finished (a run cut short leaves some)."""
    mine = accounts.by_id()
    for name, seen in list(watcher.seen.items()):
        if not seen.finished and seen.user_id in mine:
            yield mine[seen.user_id], name


async def bounded(jobs: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    """Run the jobs, at most ``concurrency`` at a time, in order of the list."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(j) for j in jobs))


async def cancel_all(
    shop: Shop, watcher: Watcher, pairs: list[tuple[Account, str]], within: float
) -> tuple[int, float]:
    """Cancel these checkouts through the API and wait until each has ended: how many
    ended and the seconds it took (the drain between phases)."""
    began = time.monotonic()
    await bounded([functools.partial(shop.cancel, a, n) for a, n in pairs], concurrency=16)
    ended, _ = await watcher.wait_all([n for _, n in pairs], finished, within)
    return ended, time.monotonic() - began
