"""The checkout read model and saga journal in Postgres.

Two jobs in one place: (1) a durable record of every checkout, its lines and
its phase history, kept after the resource is deleted, for listing and audit;
(2) the saga's journal of effects already done (reserve attempted, payment page
created with which Midtrans order id and token, events published, expiry
scheduled), which is what lets the operator resume after a crash without
writing progress to the apiserver.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .latest import Latest
from .saga import TERMINAL, Amounts, Line, Phase, parse_timestamp


@dataclass(frozen=True)
class Record:
    order_id: str
    namespace: str
    name: str
    uid: str
    user_id: str
    phase: str
    payment_attempt: int
    midtrans_order_id: str | None
    snap_token: str | None
    redirect_url: str | None
    payment_status: str | None
    reserve_attempted: bool
    committed_published: bool
    expiry_scheduled: bool
    final_event_published: bool
    expires_at: dt.datetime | None
    finished_at: dt.datetime | None
    deleted_at: dt.datetime | None
    total: int | None
    created_at: dt.datetime
    currency: str = "IDR"
    paid_order_id: str | None = None  # the verified payment this checkout settled by
    paid_amount: int | None = None
    final_event_attempts: int = 0  # deliberate republications of the final event
    reservation_closed_at: dt.datetime | None = None  # the Product service showed it closed

    def ending_done(self, phase: Phase) -> bool:
        """Whether the ending its resource shows (``phase``) is journaled and announced."""
        return ending_done(
            phase,
            finished=self.finished_at is not None,
            reserve_attempted=self.reserve_attempted,
            final_event_published=self.final_event_published,
            paid=self.paid_order_id is not None,
        )


def ending_done(
    phase: Phase,
    *,
    finished: bool,
    reserve_attempted: bool,
    final_event_published: bool,
    paid: bool,
) -> bool:
    """Whether nothing is left to journal or announce of an ending in ``phase``.

    Settled needs a verified payment in the journal, or its final event out (the journal
    then records what a hand-written Settled really was); any ending needs the journal
    to record it and, once stock was asked for, its final event out.
    """
    if phase is Phase.SETTLED and not paid:
        return final_event_published
    return finished and (final_event_published or not reserve_attempted)


_COLUMNS = ", ".join(Record.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Unarchived:
    """A journal row whose resource is not known to be deleted, as the sweep compares it."""

    namespace: str
    name: str
    uid: str
    created_at: dt.datetime
    finished_at: dt.datetime | None


_DONE_SETTLED, _DONE_OTHER = 1, 2  # read_endings: done if the resource is (not) Settled
# Sales remembered for the payment inbox: notifications follow a sale by about a second,
# so this covers minutes of sales at any rate the operator reaches (~100 bytes each).
# The same bound holds the TTL deletes awaiting their DELETED event (milliseconds each).
REMEMBERED_UP_TO = 4096


@dataclass(frozen=True)
class PaymentPage:
    """The payment page recorded for a checkout: the one the buyer is handed."""

    midtrans_order_id: str
    snap_token: str
    redirect_url: str


_PAGE_COLUMNS = ", ".join(PaymentPage.__dataclass_fields__)


@dataclass(frozen=True)
class Terms:
    """What the start step journals before its status write lets anyone pay: the amounts
    and the deadline a payment is judged by, and the payment page the buyer is handed.
    Everything the resource shows of them is written from these."""

    subtotal: int
    fees: int
    discount: int
    total: int
    expires_at: dt.datetime
    midtrans_order_id: str
    snap_token: str
    redirect_url: str
    lines: int  # products held

    def amounts(self) -> dict[str, int]:
        return Amounts(self.subtotal, self.fees, self.discount, self.total).as_status()

    def page(self) -> tuple[str, str, str]:
        """(Midtrans order id, Snap token, link), as ``actions.payment_page`` gives them."""
        return self.midtrans_order_id, self.snap_token, self.redirect_url


@dataclass(frozen=True)
class SnapOrder:
    """One Snap order made for a checkout (``payment_pages``), shown to the buyer or not."""

    midtrans_order_id: str
    order_id: str
    attempt: int
    created_at: dt.datetime
    snap_expires_at: dt.datetime
    snap_token: str | None  # None: Midtrans' answer was lost
    shown: bool


def midtrans_order_id(order_id: str, attempt: int) -> str:
    """The first payment page uses the order id itself; later ones add ``~attempt``.

    ``~`` cannot appear in a Kubernetes name, so the order id is always the part
    before it.
    """
    return order_id if attempt <= 1 else f"{order_id}~{attempt}"


def order_id_of(midtrans_order: str) -> str:
    return midtrans_order.split("~", 1)[0]


class ReadModel:
    def __init__(self, pool: Any) -> None:
        self.pool = pool
        # uid -> _DONE_* bits, from one read of the journal at start (read_endings)
        self._endings: dict[str, int] = {}
        # order id -> the Midtrans order it was sold by, for the latest endings this
        # process journaled Settled and announced (the payment inbox's answer to the
        # notifications that follow a sale, without a read)
        self._sold: Latest[str, str] = Latest(REMEMBERED_UP_TO)
        # uids of AwaitingPayment checkouts whose `committed` and expiry job this process
        # saw journaled, with the payment deadline journaled with their terms (the
        # reconciler's later looks at them need no read)
        self._announced: dict[str, dt.datetime] = {}
        # uids of ended checkouts this process deleted (TTL) and archived, until their
        # DELETED event (bounded: a watch gap may never bring it)
        self._archived: Latest[str, None] = Latest(REMEMBERED_UP_TO)

    async def register(
        self,
        order_id: str,
        namespace: str,
        name: str,
        uid: str,
        user_id: str,
        currency: str,
        lines: Sequence[Line],
    ) -> Record | None:
        """Record a new checkout; None when its order id belongs to another resource.

        One statement: the row, its lines and its first history entry, or nothing when
        the order id is taken (then the row that holds it is read).
        """
        row = await self.pool.fetchrow(
            "WITH new AS ("
            " INSERT INTO checkouts (order_id, namespace, name, uid, user_id, currency, phase)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'Pending')"
            f" ON CONFLICT (order_id) DO NOTHING RETURNING {_COLUMNS}),"
            " lines AS (INSERT INTO checkout_items (order_id, product_id, unit_price, quantity)"
            " SELECT $1, l.product_id, l.unit_price, l.quantity"
            " FROM unnest($7::text[], $8::bigint[], $9::integer[])"
            " AS l(product_id, unit_price, quantity) WHERE EXISTS (SELECT FROM new)),"
            " history AS (INSERT INTO checkout_history (order_id, phase, reason)"
            " SELECT order_id, phase, 'Created' FROM new)"
            f" SELECT {_COLUMNS} FROM new",
            order_id,
            namespace,
            name,
            uid,
            user_id,
            currency,
            [x.product_id for x in lines],
            [x.unit_price for x in lines],
            [x.quantity for x in lines],
        )
        record = Record(**dict(row)) if row else await self.get(order_id)
        assert record is not None
        return record if record.uid == uid else None

    async def get(self, order_id: str) -> Record | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM checkouts WHERE order_id = $1", order_id
        )
        return Record(**dict(row)) if row else None

    async def mark(self, order_id: str, **flags: Any) -> None:
        """Set journal columns (reserve_attempted, committed_published, ...)."""
        allowed = {
            "reserve_attempted",
            "committed_published",
            "expiry_scheduled",
            "final_event_published",
        }
        if not flags or set(flags) - allowed:
            raise ValueError(f"unknown journal flags {sorted(set(flags) - allowed)}")
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(flags, start=2))
        await self.pool.execute(
            f"UPDATE checkouts SET {sets}, updated_at = now() WHERE order_id = $1",
            order_id,
            *flags.values(),
        )

    async def next_payment_attempt(
        self,
        order_id: str,
        snap_expires_at: dt.datetime | None = None,
        max_attempts: int | None = None,
    ) -> tuple[int, str] | None:
        """Journal a new payment-page attempt (and its Midtrans order id) before calling.

        None when a page is already recorded (another writer got there first): the
        caller uses that one (:meth:`payment_page`) and makes none of its own. With
        ``snap_expires_at`` the attempt's Snap order is listed in ``payment_pages`` by
        the same statement (:meth:`journal_snap_order`), unless it is past
        ``max_attempts`` (None: no cap).
        """
        # midtrans_order_id() in SQL: the first attempt uses the order id itself.
        row = await self.pool.fetchrow(
            "WITH attempt AS (UPDATE checkouts SET payment_attempt = payment_attempt + 1,"
            " midtrans_order_id = CASE WHEN payment_attempt < 1 THEN order_id"
            " ELSE order_id || '~' || (payment_attempt + 1) END, updated_at = now()"
            " WHERE order_id = $1 AND snap_token IS NULL"
            " RETURNING payment_attempt, midtrans_order_id),"
            " listed AS (INSERT INTO payment_pages"
            " (midtrans_order_id, order_id, attempt, snap_expires_at)"
            " SELECT midtrans_order_id, $1, payment_attempt, $2 FROM attempt"
            " WHERE $2::timestamptz IS NOT NULL AND ($3::int IS NULL OR payment_attempt <= $3)"
            " ON CONFLICT (midtrans_order_id) DO NOTHING)"
            " SELECT payment_attempt, midtrans_order_id FROM attempt",
            order_id,
            snap_expires_at,
            max_attempts,
        )
        if row is None:
            return None
        attempt, midtrans = int(row["payment_attempt"]), str(row["midtrans_order_id"])
        assert midtrans == midtrans_order_id(order_id, attempt)
        return attempt, midtrans

    async def journal_snap_order(
        self, order_id: str, midtrans_order: str, attempt: int, snap_expires_at: dt.datetime
    ) -> bool:
        """List a Snap order in ``payment_pages`` before Midtrans is asked for it (again:
        its listed Snap expiry moves to the later one). False, and nothing written, when a
        page is recorded already: the caller shows that one and asks Midtrans for nothing.
        """
        listed = await self.pool.fetchval(
            "INSERT INTO payment_pages (midtrans_order_id, order_id, attempt, snap_expires_at)"
            " SELECT $1, $2, $3, $4 WHERE EXISTS"
            " (SELECT FROM checkouts WHERE order_id = $2 AND snap_token IS NULL)"
            " ON CONFLICT (midtrans_order_id) DO UPDATE"
            " SET snap_expires_at = GREATEST(payment_pages.snap_expires_at,"
            " EXCLUDED.snap_expires_at) RETURNING true",
            midtrans_order,
            order_id,
            attempt,
            snap_expires_at,
        )
        return bool(listed)

    async def record_payment_page(
        self, order_id: str, midtrans_order: str, token: str, redirect_url: str
    ) -> PaymentPage:
        """Record our page unless one is recorded already (compare-and-set); return the winner.

        Of two writers (two operators, or a stale attempt) the first to record wins and
        both get its page, so whichever status write succeeds hands the buyer the page
        the journal polls. A loser's own Snap order stays listed in ``payment_pages``.
        """
        row = await self.pool.fetchrow(
            "WITH page AS (UPDATE payment_pages SET snap_token = $2"
            " WHERE midtrans_order_id = $4)"
            " UPDATE checkouts SET snap_token = $2, redirect_url = $3, midtrans_order_id = $4,"
            " updated_at = now() WHERE order_id = $1 AND snap_token IS NULL"
            f" RETURNING {_PAGE_COLUMNS}",
            order_id,
            token,
            redirect_url,
            midtrans_order,
        )
        if row is None:  # lost the race: a statement of its own sees the winner's row
            winner = await self.payment_page(order_id)
            assert winner is not None
            return winner
        return PaymentPage(**dict(row))

    async def payment_page(self, order_id: str) -> PaymentPage | None:
        """The recorded page (the one the buyer is given), if any."""
        row = await self.pool.fetchrow(
            f"SELECT {_PAGE_COLUMNS} FROM checkouts WHERE order_id = $1 AND snap_token IS NOT NULL",
            order_id,
        )
        return PaymentPage(**dict(row)) if row else None

    async def payment_pages(self, order_id: str) -> list[SnapOrder]:
        """Every Snap order made for a checkout, oldest first; ``shown`` marks the recorded one."""
        rows = await self.pool.fetch(
            "SELECT p.midtrans_order_id, p.order_id, p.attempt, p.created_at,"
            " p.snap_expires_at, p.snap_token,"
            " (c.snap_token IS NOT NULL AND c.midtrans_order_id = p.midtrans_order_id) AS shown"
            " FROM payment_pages p JOIN checkouts c USING (order_id)"
            " WHERE p.order_id = $1 ORDER BY p.created_at, p.attempt",
            order_id,
        )
        return [SnapOrder(**dict(r)) for r in rows]

    async def snap_order_ages(self, order_id: str) -> tuple[dt.timedelta, dt.timedelta] | None:
        """How long ago this checkout's first and its latest Snap order were journaled in
        ``payment_pages`` (each before its first call to Midtrans; asked for again, an
        order keeps its time), by the journal's clock alone; None while it has none.

        The payment-setup deadline counts from the first, the pace of new orders from the
        latest (``saga.new_snap_order_wait``).
        """
        row = await self.pool.fetchrow(
            "SELECT now() - min(created_at) AS first, now() - max(created_at) AS latest"
            " FROM payment_pages WHERE order_id = $1",
            order_id,
        )
        if row is None or row["first"] is None:
            return None
        return row["first"], row["latest"]

    async def made_order(self, order_id: str, midtrans_order: str) -> bool:
        """Whether Midtrans made ``midtrans_order`` for this checkout at our asking: it
        answered with its Snap token. An order it refused as taken (another release's of
        the same name, say), or whose answer never came, has no page anyone was handed."""
        made: bool = await self.pool.fetchval(
            "SELECT EXISTS (SELECT FROM payment_pages WHERE midtrans_order_id = $2"
            " AND order_id = $1 AND snap_token IS NOT NULL)"
            " OR EXISTS (SELECT FROM checkouts WHERE order_id = $1"
            " AND midtrans_order_id = $2 AND snap_token IS NOT NULL)",
            order_id,
            midtrans_order,
        )
        return made

    async def record_lines(self, order_id: str, lines: Sequence[Line]) -> None:
        await self.pool.executemany(
            "UPDATE checkout_items SET name = $3 WHERE order_id = $1 AND product_id = $2",
            [(order_id, x.product_id, x.name) for x in lines],
        )

    async def record_terms(
        self,
        order_id: str,
        amounts: dict[str, int],
        expires_at: dt.datetime,
        lines: Sequence[Line] = (),
    ) -> None:
        """Journal the amounts and the deadline a payment is judged by (before the
        status write that lets anyone pay), and the reserved lines' names."""
        await self.pool.execute(
            "WITH named AS (UPDATE checkout_items i SET name = l.name"
            " FROM unnest($7::text[], $8::text[]) AS l(product_id, name)"
            " WHERE i.order_id = $1 AND i.product_id = l.product_id)"
            " UPDATE checkouts SET subtotal = $2, fees = $3, discount = $4, total = $5,"
            " expires_at = $6, updated_at = now() WHERE order_id = $1",
            order_id,
            amounts["subtotal"],
            amounts["fees"],
            amounts["discount"],
            amounts["total"],
            expires_at,
            [x.product_id for x in lines],
            [x.name for x in lines],
        )

    async def terms(self, order_id: str) -> Terms | None:
        """The journaled terms and page (:class:`Terms`); None unless all are journaled."""
        row = await self.pool.fetchrow(
            "SELECT subtotal, fees, discount, total, expires_at, midtrans_order_id,"
            " snap_token, redirect_url,"
            " (SELECT count(*) FROM checkout_items i WHERE i.order_id = c.order_id) AS lines"
            " FROM checkouts c WHERE order_id = $1 AND total IS NOT NULL"
            " AND expires_at IS NOT NULL AND snap_token IS NOT NULL",
            order_id,
        )
        return Terms(**dict(row)) if row else None

    async def record_phase(
        self,
        order_id: str,
        phases: Sequence[tuple[Phase, str]],
        *,
        payment: dict[str, Any] | None = None,
        failure: tuple[str, str] | None = None,
        deleted: bool = False,
        paid: tuple[str, int] | None = None,
    ) -> Record:
        """Record phase changes (and what came with them) and append them to the history,
        in one statement; the journal as it is then.

        ``paid``: the verified payment (Midtrans order, amount) the checkout settled by,
        journaled with the ending (see :meth:`mark_paid`).
        """
        final = phases[-1][0]
        payment = payment or {}
        paid_order, paid_amount = paid or (None, None)
        row = await self.pool.fetchrow(
            "WITH changed AS (UPDATE checkouts SET phase = $2, updated_at = now(),"
            " payment_status = COALESCE($3, payment_status),"
            " fraud_status = COALESCE($4, fraud_status),"
            " midtrans_transaction_id = COALESCE($5, midtrans_transaction_id),"
            " paid_at = COALESCE($6, paid_at),"
            " failure_reason = COALESCE($7, failure_reason),"
            " failure_message = COALESCE($8, failure_message),"
            " finished_at = CASE WHEN $9 THEN COALESCE(finished_at, now())"
            " ELSE finished_at END,"
            " deleted_at = CASE WHEN $10 THEN COALESCE(deleted_at, now()) ELSE deleted_at END,"
            " paid_order_id = COALESCE($11, paid_order_id),"
            " paid_amount = CASE WHEN $11::text IS NULL THEN paid_amount ELSE $12 END"
            f" WHERE order_id = $1 RETURNING {_COLUMNS}),"
            " history AS (INSERT INTO checkout_history (order_id, phase, reason)"
            " SELECT $1, h.phase, h.reason"
            " FROM unnest($13::text[], $14::text[]) WITH ORDINALITY AS h(phase, reason, n)"
            " ORDER BY h.n)"
            f" SELECT {_COLUMNS} FROM changed",
            order_id,
            final.value,
            payment.get("transactionStatus"),
            payment.get("fraudStatus"),
            payment.get("transactionId"),
            parse_timestamp(payment.get("paidAt")),
            failure[0] if failure else None,
            failure[1] if failure else None,
            final in TERMINAL,
            deleted,
            paid_order,
            paid_amount,
            [phase.value for phase, _ in phases],
            [reason for _, reason in phases],
        )
        if row is None:
            raise LookupError(f"no checkout {order_id} in the journal")
        return Record(**dict(row))

    async def mark_paid(self, order_id: str, midtrans_order: str, amount: int) -> None:
        """Journal a verified payment before the status write that settles by it.

        The ``settled`` event (which makes the stock sold) is published only for a
        checkout whose journal holds this: a Settled phase written by anyone else
        proves nothing.
        """
        await self.pool.execute(
            "UPDATE checkouts SET paid_order_id = $2, paid_amount = $3, updated_at = now()"
            " WHERE order_id = $1",
            order_id,
            midtrans_order,
            amount,
        )

    async def unmark_paid(self, order_id: str, midtrans_order: str) -> None:
        """Forget a journaled payment the checkout did not end Settled by (its status
        write lost to another ending); the money is being returned."""
        await self.pool.execute(
            "UPDATE checkouts SET paid_order_id = NULL, paid_amount = NULL, updated_at = now()"
            " WHERE order_id = $1 AND paid_order_id = $2 AND phase <> 'Settled'",
            order_id,
            midtrans_order,
        )

    async def final_events_due(self, grace: dt.timedelta, limit: int) -> list[Record]:
        """Ended checkouts whose reservation the Product service has not shown closed yet,
        due for a look (the first one ``grace`` after the ending)."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM checkouts"
            " WHERE finished_at IS NOT NULL AND reservation_closed_at IS NULL"
            " AND COALESCE(final_event_check_at, finished_at + $1) <= now()"
            " ORDER BY finished_at LIMIT $2",
            grace,
            limit,
        )
        return [Record(**dict(r)) for r in rows]

    async def reservations_closed(self, order_ids: Sequence[str]) -> None:
        """The Product service shows these orders' reservations closed (or never made)."""
        if order_ids:
            await self.pool.execute(
                "UPDATE checkouts SET reservation_closed_at = now(), updated_at = now()"
                " WHERE order_id = ANY($1::text[])",
                list(order_ids),
            )

    async def final_event_recheck(
        self, order_id: str, delay: dt.timedelta, *, republished: bool = False
    ) -> None:
        """Look at the reservation again after ``delay`` (and count a republication)."""
        await self.pool.execute(
            "UPDATE checkouts SET final_event_check_at = now() + $2,"
            " final_event_attempts = final_event_attempts + CASE WHEN $3 THEN 1 ELSE 0 END,"
            " updated_at = now() WHERE order_id = $1",
            order_id,
            delay,
            republished,
        )

    async def mark_deleted(self, order_id: str) -> None:
        await self.pool.execute(
            # Already marked (the TTL delete marks it, then its DELETED event comes):
            # no row version, no WAL, no commit flush.
            "UPDATE checkouts SET deleted_at = now(), updated_at = now()"
            " WHERE order_id = $1 AND deleted_at IS NULL",
            order_id,
        )

    async def undeleted(
        self, namespace: str | None = None, *, ended_before: dt.datetime | None = None
    ) -> list[Unarchived]:
        """Checkouts whose resource is not known to be deleted: every open one, and the
        ended ones (all, or with ``ended_before`` only those that ended before it).

        Only what names a row and dates it: after a restart these are every ended
        Checkout waiting for its TTL delete (15,000 as full records were ~25 MiB)."""
        rows = await self.pool.fetch(
            "SELECT namespace, name, uid, created_at, finished_at FROM checkouts"
            " WHERE deleted_at IS NULL"
            " AND ($1::text IS NULL OR namespace = $1)"
            " AND (finished_at IS NULL OR $2::timestamptz IS NULL OR finished_at < $2)",
            namespace,
            ended_before,
        )
        return [
            Unarchived(sys.intern(ns), name, uid, created, finished)
            for ns, name, uid, created, finished in rows
        ]

    async def read_endings(self, namespace: str | None = None) -> int:
        """Learn, in one read, which ended checkouts' endings are journaled and announced.

        A restarted operator looks at every stored Checkout once, most of them ended and
        waiting for their TTL delete: :meth:`ending_known_done` answers for those without
        a query each (15,000 of them took 15,000 journal reads). Returns how many are known.
        """
        rows = await self.pool.fetch(
            "SELECT uid, reserve_attempted, final_event_published,"
            " paid_order_id IS NOT NULL AS paid FROM checkouts"
            " WHERE deleted_at IS NULL AND finished_at IS NOT NULL"
            " AND ($1::text IS NULL OR namespace = $1)",
            namespace or None,
        )
        endings: dict[str, int] = {}
        for row in rows:
            flags = {
                k: bool(row[k]) for k in ("reserve_attempted", "final_event_published", "paid")
            }
            bits = 0
            # Cancelled stands for every ending but Settled: the rule tells only those apart.
            for phase, bit in ((Phase.SETTLED, _DONE_SETTLED), (Phase.CANCELLED, _DONE_OTHER)):
                if ending_done(phase, finished=True, **flags):
                    bits |= bit
            if bits:
                endings[row["uid"]] = bits
        self._endings = endings
        return len(endings)

    def ending_known_done(self, uid: str, phase: Phase) -> bool:
        """Whether :meth:`read_endings` found this resource's ending journaled and
        announced (asked once per resource: the answer is forgotten, as the journal moves on).

        Safe to trust later: an ending once journaled and announced stays so.
        """
        bits = self._endings.pop(uid, 0)
        if bits and not self._endings:
            self._endings = {}  # the emptied table's memory back
        return bool(bits & (_DONE_SETTLED if phase is Phase.SETTLED else _DONE_OTHER))

    def remember_sold(self, order_id: str, midtrans_order: str) -> None:
        """The checkout ended Settled, its journal holds ``midtrans_order`` as the payment
        it was sold by, and its final event is announced.

        Safe to trust later: a terminal phase never changes, nor the payment it was
        settled by. Only the latest ``REMEMBERED_UP_TO`` are kept; older ones are read.
        """
        self._sold.put(order_id, midtrans_order)

    def sold_by(self, order_id: str) -> str | None:
        """The Midtrans order :meth:`remember_sold` recorded for the checkout, if any."""
        return self._sold.get(order_id)

    def remember_archived(self, uid: str) -> None:
        """The ended checkout's ending is journaled and announced, and this process deleted
        it and marked it deleted: its DELETED event needs no journal read."""
        self._archived.put(uid, None)

    def archived_by_us(self, uid: str) -> bool:
        """Whether :meth:`remember_archived` holds ``uid`` (asked once: then forgotten)."""
        return self._archived.take(uid)

    def remember_announced(self, uid: str, deadline: dt.datetime) -> None:
        """The AwaitingPayment checkout's journal says Awaiting, committed published and
        expiry scheduled, and ``deadline`` is the payment deadline journaled with its
        terms; none of these changes while it awaits payment."""
        self._announced[uid] = deadline

    def announced_known(self, uid: str) -> bool:
        return uid in self._announced

    def announced_deadline(self, uid: str) -> dt.datetime | None:
        """The journaled payment deadline :meth:`remember_announced` holds, if any."""
        return self._announced.get(uid)

    def forget_announced(self, uid: str) -> None:
        """The checkout moves on (an ending) or is gone."""
        self._announced.pop(uid, None)

    async def history(self, order_id: str) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT phase, reason FROM checkout_history WHERE order_id = $1 ORDER BY id",
            order_id,
        )
        return [(r["phase"], r["reason"]) for r in rows]
