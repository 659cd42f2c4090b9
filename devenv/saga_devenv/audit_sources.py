"""Where the ledger audit reads from, and reading it without changing anything.

Settings come from flags, else from the environment the system itself uses
(``CHECKOUT_DATABASE_URL``, ``PRODUCT_DB_SCHEMA``, ``KUBECONFIG``, ``MIDTRANS_CORE_URL``,
...), else from the local ``scripts/up`` system (``saga_devenv`` config and apps), so the
same command audits a laptop or a cluster. Nothing is created: a missing local secret is
an error, not a new secret.

Read-only by construction: Postgres sessions are ``default_transaction_read_only``, the
apiserver is only listed, Midtrans only asked for statuses (within a rate budget). Each
source is read in one repeatable-read snapshot, in an order that keeps the asynchronous
gaps between them one-sided (see :func:`load`). A source that cannot be reached after a
few tries raises :class:`CannotCheck` (exit 2): the audit never guesses.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from checkout_operator.poller import TokenBucket
from midtrans import (
    MidtransClient,
    MidtransClientError,
    MidtransConfig,
    MidtransServerError,
    TransactionStatus,
)
from saga_kit.checkout_resource import GROUP, PLURAL, VERSION
from saga_kit.db import check_schema_name
from saga_kit.settings import ConfigError, Secret, env_secret

from . import apps, servers
from .audit import (
    CheckoutRow,
    ProductLedger,
    Reservation,
    Resource,
    ReturnRow,
    Snapshot,
    orders_to_ask,
)
from .config import PORTS, DevConfig

T = TypeVar("T")

ATTEMPTS = 4  # per source, with backoff 0.5, 1, 2 s between
MIDTRANS_CONCURRENCY = 8
# The local sandbox's key, as saga_devenv.apps.sandbox_key names it (read, never made).
SANDBOX_KEY_FILE = "midtrans-server-key"


class CannotCheck(Exception):
    """A source could not be read: the audit has no verdict (exit 2)."""

    def __init__(self, source: str, why: str) -> None:
        super().__init__(f"could not check: {source}: {why}")


# --- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditSettings:
    readmodel_dsn: Secret
    readmodel_schema: str
    products_dsn: Secret
    products_schema: str
    kubeconfig: Path | None  # None: the Pod's service account
    kube_context: str | None
    namespaces: tuple[str, ...]  # () = all namespaces
    midtrans: MidtransConfig
    midtrans_rate: float
    grace: dt.timedelta
    strict: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument
    p("--database-url", help="read model DSN (env CHECKOUT_DATABASE_URL[_FILE])")
    p("--readmodel-schema", help="the operator's schema (env CHECKOUT_DB_SCHEMA; checkouts)")
    p("--products-database-url", help="Product DSN (env PRODUCT_DATABASE_URL[_FILE])")
    p("--products-schema", help="the Product service's schema (env PRODUCT_DB_SCHEMA; products)")
    p("--kubeconfig", help="env KUBECONFIG; default: the local system's, or in-cluster")
    p("--context", help="kubeconfig context (default: its current one)")
    p(
        "-n",
        "--namespace",
        action="append",
        help="Checkout namespace, repeatable (env CHECKOUT_NAMESPACE; default: default)",
    )
    p("-A", "--all-namespaces", action="store_true", help="Checkouts of every namespace")
    p("--midtrans-url", help="Midtrans Core API base URL (env MIDTRANS_CORE_URL)")
    p("--midtrans-server-key-file", help="env MIDTRANS_SERVER_KEY[_FILE]")
    p("--midtrans-rate", type=_positive, default=20.0, help="status calls per second (20)")
    p("--settle-seconds", type=_non_negative, default=60.0, help="grace for fresh endings (60)")
    p("--strict", action="store_true", help="money still being returned is a mismatch too")
    p("--json", action="store_true", help="one JSON object on stdout, for machines")


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def local_config() -> DevConfig | None:
    """The local system's config; None where there is none (an installed image)."""
    try:
        return DevConfig.from_env()
    except (OSError, KeyError, ValueError):
        return None
    except ConfigError as exc:  # a CHECKOUT_SAGA_*_PORT that is not a port
        raise CannotCheck("settings", str(exc)) from exc


def _local_sandbox(cfg: DevConfig | None) -> str:
    return apps.url(cfg.sandbox_port if cfg else PORTS["sandbox_port"][1])


def settings_from(args: argparse.Namespace, cfg: DevConfig | None) -> AuditSettings:
    """Flags, else the system's environment, else the local system; CannotCheck if none."""
    readmodel_dsn = _secret(args.database_url, "CHECKOUT_DATABASE_URL", lambda: _local_dsn(cfg))
    key_flag = args.midtrans_server_key_file
    kubeconfig = _kubeconfig(args.kubeconfig, cfg)
    try:
        key = _secret(
            Path(key_flag).read_text().strip() if key_flag else None,
            "MIDTRANS_SERVER_KEY",
            lambda: _local_secret(cfg, SANDBOX_KEY_FILE),
        )
        url = args.midtrans_url or os.environ.get("MIDTRANS_CORE_URL") or _local_sandbox(cfg)
        return AuditSettings(
            readmodel_dsn=readmodel_dsn,
            readmodel_schema=check_schema_name(
                args.readmodel_schema or os.environ.get("CHECKOUT_DB_SCHEMA") or "checkouts"
            ),
            products_dsn=_secret(
                args.products_database_url, "PRODUCT_DATABASE_URL", lambda: readmodel_dsn.value
            ),
            products_schema=check_schema_name(
                args.products_schema or os.environ.get("PRODUCT_DB_SCHEMA") or "products"
            ),
            kubeconfig=kubeconfig,
            kube_context=args.context,
            namespaces=_namespaces(args, in_cluster=kubeconfig is None),
            midtrans=MidtransConfig(server_key=key.value, snap_base_url=url, core_base_url=url),
            midtrans_rate=args.midtrans_rate,
            grace=dt.timedelta(seconds=args.settle_seconds),
            strict=args.strict,
        )
    except (ValueError, OSError) as exc:  # a bad schema name, an unreadable key file
        raise CannotCheck("settings", str(exc)) from exc


def _namespaces(args: argparse.Namespace, in_cluster: bool) -> tuple[str, ...]:
    """() for all. CHECKOUT_NAMESPACE as the operator reads it (empty or unset: all),
    except that the local system's operator watches ``default``."""
    if args.all_namespaces:
        return ()
    if args.namespace:
        return tuple(args.namespace)
    chosen = os.environ.get("CHECKOUT_NAMESPACE", "" if in_cluster else "default").strip()
    return (chosen,) if chosen else ()


def _secret(flag: str | None, env: str, fallback: Callable[[], str | None]) -> Secret:
    """The flag's value, else ``env`` (or ``env_FILE``), else ``fallback()``."""
    if flag:
        return Secret(flag)
    try:
        value = (
            env_secret(env).value
            if os.environ.get(env) or os.environ.get(f"{env}_FILE")
            else fallback()
        )
    except ConfigError as exc:
        raise CannotCheck("settings", str(exc)) from exc
    if not value:
        raise CannotCheck("settings", f"set {env} or its flag (no local system found)")
    return Secret(value)


def _local_dsn(cfg: DevConfig | None) -> str | None:
    try:
        return servers.postgres_dsn(cfg) if cfg is not None else None
    except FileNotFoundError:
        return None


def _local_secret(cfg: DevConfig | None, name: str) -> str | None:
    path = cfg.run_dir / "secrets" / name if cfg is not None else None
    return path.read_text().strip() if path is not None and path.exists() else None


def _kubeconfig(flag: str | None, cfg: DevConfig | None) -> Path | None:
    """The kubeconfig to use; None: the Pod's service account."""
    chosen = flag or os.environ.get("KUBECONFIG")
    if chosen:
        return Path(chosen)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    if cfg is None:
        raise CannotCheck("settings", "set KUBECONFIG or --kubeconfig (no local system found)")
    return cfg.kubeconfig


# --- reading -----------------------------------------------------------------------------


async def _tries(source: str, read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, again after transient failures; CannotCheck when it never works."""
    for attempt in range(ATTEMPTS):
        try:
            return await read()
        except CannotCheck:
            raise
        except Exception as exc:
            if not _transient(exc) or attempt == ATTEMPTS - 1:
                raise CannotCheck(source, _why(exc)) from exc
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def _why(exc: Exception) -> str:
    if isinstance(exc, ApiException):  # its text would carry every response header
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _transient(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return exc.status is None or exc.status >= 500 or exc.status == 429
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | aiohttp.ClientError
        | MidtransServerError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.InterfaceError,
    )


def _where(dsn: Secret) -> str:
    """Host and port of a DSN, for messages (never its password)."""
    parts = urlsplit(dsn.value)
    return f"{parts.hostname or 'local socket'}:{parts.port or 5432}"


async def _snapshot(dsn: Secret, schema: str, read: Callable[[Any], Awaitable[T]]) -> T:
    """``read(conn)`` in one read-only repeatable-read transaction on ``schema``."""
    conn = await asyncpg.connect(
        dsn.value,
        timeout=10,
        server_settings={
            "search_path": schema,
            "application_name": "saga-devenv-audit",
            "default_transaction_read_only": "on",
        },
    )
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await read(conn)
    finally:
        await conn.close()


async def _require_tables(conn: Any, schema: str, *tables: str) -> None:
    for table in tables:
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            raise CannotCheck(
                f"Postgres schema {schema}",
                f"no table {table} (wrong schema, or its service's migrations not applied)",
            )


async def load_products(s: AuditSettings) -> tuple[list[ProductLedger], list[Reservation]]:
    async def read(conn: Any) -> tuple[list[ProductLedger], list[Reservation]]:
        await _require_tables(
            conn, s.products_schema, "products", "reservations", "stock_movements"
        )
        sold: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for row in await conn.fetch(
            "SELECT product_id, reference, -sum(delta) AS units FROM stock_movements"
            " WHERE reason = 'sold' GROUP BY product_id, reference"
        ):
            sold[row["product_id"]][row["reference"]] = int(row["units"])
        products = [
            ProductLedger(r["id"], r["stock"], r["reserved"], int(r["ledger"]), sold[r["id"]])
            for r in await conn.fetch(
                "SELECT p.id, p.stock, p.reserved, COALESCE(m.total, 0) AS ledger"
                " FROM products p LEFT JOIN (SELECT product_id, sum(delta) AS total"
                " FROM stock_movements GROUP BY product_id) m ON m.product_id = p.id"
                " ORDER BY p.id"
            )
        ]
        lines: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for row in await conn.fetch(
            "SELECT transaction_id, product_id, quantity FROM reservation_lines"
        ):
            lines[row["transaction_id"]][row["product_id"]] = row["quantity"]
        reservations = [
            Reservation(r["transaction_id"], r["status"], lines[r["transaction_id"]])
            for r in await conn.fetch(
                "SELECT transaction_id, status FROM reservations ORDER BY transaction_id"
            )
        ]
        return products, reservations

    return await _snapshot(s.products_dsn, s.products_schema, read)


_CHECKOUT_COLUMNS = ", ".join(CheckoutRow.__dataclass_fields__)
_RETURN_COLUMNS = ", ".join(ReturnRow.__dataclass_fields__)


@dataclass(frozen=True)
class ReadModelRows:
    checkouts: list[CheckoutRow]
    pages: dict[str, list[str]]
    returns: list[ReturnRow]
    made: frozenset[str]  # the Midtrans orders Midtrans made for us (a Snap token came back)


async def load_readmodel(s: AuditSettings) -> ReadModelRows:
    async def read(conn: Any) -> ReadModelRows:
        await _require_tables(
            conn, s.readmodel_schema, "checkouts", "payment_pages", "payment_returns"
        )
        checkouts = [
            CheckoutRow(**dict(r))
            for r in await conn.fetch(
                f"SELECT {_CHECKOUT_COLUMNS} FROM checkouts ORDER BY namespace, name"  # noqa: S608
            )
        ]
        pages: defaultdict[str, list[str]] = defaultdict(list)
        for r in await conn.fetch("SELECT order_id, midtrans_order_id FROM payment_pages"):
            pages[r["order_id"]].append(r["midtrans_order_id"])
        returns = [
            ReturnRow(**dict(r))
            for r in await conn.fetch(f"SELECT {_RETURN_COLUMNS} FROM payment_returns")  # noqa: S608
        ]
        made = frozenset(
            r["midtrans_order_id"]
            for r in await conn.fetch(
                "SELECT midtrans_order_id FROM payment_pages WHERE snap_token IS NOT NULL"
                " UNION SELECT midtrans_order_id FROM checkouts"
                " WHERE snap_token IS NOT NULL AND midtrans_order_id IS NOT NULL"
            )
        )
        return ReadModelRows(checkouts, dict(pages), returns, made)

    return await _snapshot(s.readmodel_dsn, s.readmodel_schema, read)


async def _kube_client(s: AuditSettings) -> kclient.ApiClient:
    configuration = kclient.Configuration()
    try:
        if s.kubeconfig is None:
            kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await kconfig.load_kube_config(
                config_file=str(s.kubeconfig),
                context=s.kube_context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as exc:
        raise CannotCheck("kubeconfig", f"{s.kubeconfig or 'in-cluster'}: {exc}") from exc
    return kclient.ApiClient(configuration)


async def load_resources(s: AuditSettings) -> list[Resource]:
    """Every Checkout in the namespaces (all when none), page by page."""
    async with await _kube_client(s) as api:
        custom = kclient.CustomObjectsApi(api)
        bodies: list[dict[str, Any]] = []
        for namespace in s.namespaces or ("",):
            token = ""  # the apiserver reads an empty continue as none
            while True:
                page: dict[str, Any]
                if namespace:
                    page = await custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, limit=500, _continue=token
                    )
                else:
                    page = await custom.list_cluster_custom_object(
                        GROUP, VERSION, PLURAL, limit=500, _continue=token
                    )
                bodies.extend(page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue") or ""
                if not token:
                    break
    return [Resource.of(body) for body in bodies]


async def ask_midtrans(
    s: AuditSettings, orders: Sequence[str]
) -> dict[str, TransactionStatus | None]:
    """Midtrans' status of each order, at most ``midtrans_rate`` calls per second."""
    bucket = TokenBucket(s.midtrans_rate)
    slots = asyncio.Semaphore(MIDTRANS_CONCURRENCY)
    answers: dict[str, TransactionStatus | None] = {}
    async with MidtransClient(s.midtrans) as midtrans:

        async def status(order: str) -> TransactionStatus | None:
            await bucket.take()
            try:
                return await midtrans.status(order)
            except ValueError:  # an order id Midtrans would refuse: it never took money
                return None
            except MidtransClientError as exc:  # a wrong key or URL: retrying won't help
                raise CannotCheck("Midtrans status API", str(exc)) from exc

        async def ask(order: str) -> None:
            async with slots:
                answers[order] = await _tries(
                    f"Midtrans status API ({s.midtrans.core_base_url})", lambda: status(order)
                )

        try:
            async with asyncio.TaskGroup() as tasks:
                for order in orders:
                    tasks.create_task(ask(order))
        except* CannotCheck as group:
            raise group.exceptions[0] from None
    return answers


async def load(s: AuditSettings) -> Snapshot:
    """Everything, in an order that leaves only gaps the checks allow for.

    Product side first: a reservation is made after its checkout's row, so every
    reservation seen has its row in the later read of the read model. Resources before
    rows: a row newer than the list may belong to a resource made since (judged after
    the grace). Midtrans last, about the orders the rows name. ``now`` is taken first, so
    whatever changed while reading counts as fresh.
    """
    now = dt.datetime.now(dt.UTC)
    products, reservations = await _tries(
        f"Postgres {_where(s.products_dsn)} schema {s.products_schema}",
        lambda: load_products(s),
    )
    resources = await _tries("apiserver", lambda: load_resources(s))
    rows = await _tries(
        f"Postgres {_where(s.readmodel_dsn)} schema {s.readmodel_schema}",
        lambda: load_readmodel(s),
    )
    payments = await ask_midtrans(s, orders_to_ask(rows.checkouts, rows.pages, rows.returns))
    return Snapshot(
        now=now,
        products=products,
        reservations=reservations,
        checkouts=rows.checkouts,
        resources=resources,
        pages=rows.pages,
        returns=rows.returns,
        payments=payments,
        made=rows.made,
        namespaces=frozenset(s.namespaces) if s.namespaces else None,
    )
