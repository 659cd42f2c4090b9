"""The operator's settings, from the environment (see docs/operator.md)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from saga_kit.nats_access import NatsCredentials
from saga_kit.payment_ttl import (
    CRD_MAX_PAYMENT_TTL_SECONDS,
    DEFAULT_MAX_PAYMENT_TTL_SECONDS,
    DEFAULT_PAYMENT_TTL_SECONDS,
    cap_problem,
)
from saga_kit.settings import (
    ConfigError,
    Secret,
    env_float,
    env_int,
    env_optional,
    env_secret,
    env_service_tokens,
    env_str,
    port_problem,
    url_problem,
)

from .saga import Voucher

__all__ = ["CRD_MAX_PAYMENT_TTL_SECONDS", "DEFAULT_PAYMENT_TTL_SECONDS", "OperatorSettings"]


EVENT_MODES = ("milestones", "all", "none")


def voucher_problem(voucher: Voucher) -> str | None:
    if not 0 <= voucher.percent <= 100:
        return f"percent must be 0..100, got {voucher.percent}"
    if voucher.amount < 0:
        return f"amount must be >= 0, got {voucher.amount}"
    if voucher.max_discount is not None and voucher.max_discount < 0:
        return f"max must be >= 0, got {voucher.max_discount}"
    if not (voucher.percent or voucher.amount):
        return "gives no discount (neither percent nor amount)"
    return None


def _asked_ttl(spec: Mapping[str, Any]) -> int:
    return int(spec.get("paymentTTLSeconds", DEFAULT_PAYMENT_TTL_SECONDS))


def _vouchers(raw: str) -> dict[str, Voucher]:
    """``{"HEMAT10": {"percent": 10, "max": 50000}, "POTONG5K": {"amount": 5000}}``"""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {
            code: Voucher(
                code=code,
                percent=int(v.get("percent", 0)),
                amount=int(v.get("amount", 0)),
                max_discount=int(v["max"]) if "max" in v else None,
            )
            for code, v in data.items()
        }
    except (ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"CHECKOUT_VOUCHERS is not valid JSON vouchers: {exc}") from exc


@dataclass(frozen=True)
class OperatorSettings:
    database_url: Secret
    db_schema: str = "checkouts"
    namespace: str = ""  # "" = all namespaces
    nats_url: str = "nats://127.0.0.1:4222"
    nats_credentials: NatsCredentials | None = None
    events_namespace: str = ""
    redis_url: Secret = field(default_factory=lambda: Secret("redis://127.0.0.1:6379/0"))
    user_service: str = "127.0.0.1:18101"
    product_service: str = "127.0.0.1:18201"
    service_token: Secret = field(default_factory=lambda: Secret(""))
    fee: int = 0
    vouchers: dict[str, Voucher] = field(default_factory=dict)
    ttl_after_finished: dt.timedelta | None = dt.timedelta(hours=1)
    payment_setup_deadline: dt.timedelta = dt.timedelta(minutes=5)
    max_payment_attempts: int = 5
    # Cap on spec.paymentTTLSeconds (stock hoarding): a longer TTL is clamped to it.
    max_payment_ttl_seconds: int = 3600
    poll_interval: float = 60.0  # per checkout, jittered
    poll_rate: float = 10.0  # Midtrans status calls per second, all checkouts together
    poll_min_age: float = 10.0  # don't poll a payment page younger than this (seconds)
    # A notification is looked at once it is this old (seconds): the sale the listener
    # made is journaled by then, and the notification is acknowledged without a read.
    inbox_look_after: float = 1.0
    # How often the page of a checkout that ended unpaid is looked at (seconds): a late
    # payment there is rare and is refunded this much later at worst.
    late_watch_interval: float = 300.0
    late_payment_window: dt.timedelta = dt.timedelta(hours=1)
    refund_retry_base: dt.timedelta = dt.timedelta(seconds=30)  # doubles per refusal, max 1 h
    arq_queue: str = "arq:queue"
    workers: int = 8
    # Kubernetes Events for phase changes: "milestones" (the payment page and the
    # ending: 2 per paid checkout), "all" (one per phase change) or "none".
    events: str = "milestones"
    metrics_port: int = 0  # 0 = no metrics server
    # One acting operator (leader.py). Operators sharing a lease are replicas of each
    # other; shards watching different namespaces need different lease names.
    lease_namespace: str = "default"
    lease_name: str = "checkout-operator"
    lease_duration: float = 15.0  # seconds a lease holds without renewal
    lease_renew_every: float = 5.0
    # How often the background loops look (seconds). The defaults suit production; tests
    # shorten them to run the same wiring quickly (see docs/operator.md).
    poll_tick: float = 0.2  # the poller looks for due checkouts
    returns_tick: float = 1.0  # stray payments to void or refund
    final_event_tick: float = 5.0  # endings whose event is unannounced or not yet applied
    # An ending's event is republished if its reservation is still open this long after.
    final_event_grace: dt.timedelta = dt.timedelta(seconds=30)
    sweep_every: float = 60.0  # look for checkouts deleted while nobody watched
    sweep_min_age: dt.timedelta = dt.timedelta(seconds=30)  # only those cached this long

    def __post_init__(self) -> None:
        """Refuse at start what would misbehave later, naming the variable."""
        for problem in self._problems():
            raise ConfigError(problem)

    def _problems(self) -> Iterator[str]:
        positive = {
            "poll_tick": "CHECKOUT_POLL_TICK_SECONDS",
            "returns_tick": "CHECKOUT_RETURNS_TICK_SECONDS",
            "final_event_tick": "CHECKOUT_FINAL_EVENT_TICK_SECONDS",
            "sweep_every": "CHECKOUT_SWEEP_SECONDS",
            "poll_interval": "CHECKOUT_POLL_INTERVAL_SECONDS",
            "late_watch_interval": "CHECKOUT_LATE_WATCH_INTERVAL_SECONDS",
            "poll_rate": "CHECKOUT_POLL_RATE",
            "workers": "CHECKOUT_WORKERS",
            "max_payment_attempts": "CHECKOUT_MAX_PAYMENT_ATTEMPTS",
        }
        for name, variable in positive.items():
            if not getattr(self, name) > 0:
                yield f"{variable} must be > 0, got {getattr(self, name)}"
        durations = {
            "payment_setup_deadline": "CHECKOUT_PAYMENT_SETUP_DEADLINE_SECONDS",
            "refund_retry_base": "CHECKOUT_REFUND_RETRY_SECONDS",
            "final_event_grace": "CHECKOUT_FINAL_EVENT_GRACE_SECONDS",
        }
        for name, variable in durations.items():
            if getattr(self, name).total_seconds() <= 0:
                yield f"{variable} must be > 0 seconds, got {getattr(self, name)}"
        if self.poll_min_age < 0:
            yield f"CHECKOUT_POLL_MIN_AGE_SECONDS must be >= 0, got {self.poll_min_age}"
        if not 0 <= self.inbox_look_after <= 30:  # well inside the inbox's ack_wait (60 s)
            yield (
                "CHECKOUT_INBOX_LOOK_AFTER_SECONDS must be between 0 and 30,"
                f" got {self.inbox_look_after}"
            )
        if self.late_payment_window.total_seconds() < 0:
            yield "CHECKOUT_LATE_PAYMENT_WINDOW_SECONDS must be >= 0"
        if self.sweep_min_age.total_seconds() < 0:
            yield "CHECKOUT_SWEEP_MIN_AGE_SECONDS must be >= 0"
        if self.fee < 0:
            yield f"CHECKOUT_FEE must be >= 0 (IDR), got {self.fee}"
        for voucher in self.vouchers.values():
            if problem := voucher_problem(voucher):
                yield f"CHECKOUT_VOUCHERS: {voucher.code}: {problem}"
        if self.events not in EVENT_MODES:
            yield f"CHECKOUT_EVENTS must be one of {', '.join(EVENT_MODES)}, got {self.events!r}"
        if problem := port_problem(self.metrics_port, off_allowed=True):
            yield f"CHECKOUT_METRICS_PORT {problem}"
        if problem := url_problem(self.nats_url, ("nats", "tls")):
            yield f"CHECKOUT_NATS_URL: {problem}"
        if problem := url_problem(self.redis_url.value, ("redis", "rediss", "unix")):
            yield f"CHECKOUT_REDIS_URL: {problem}"
        for name, variable in (
            ("user_service", "CHECKOUT_USER_SERVICE"),
            ("product_service", "CHECKOUT_PRODUCT_SERVICE"),
        ):
            host, _, port = getattr(self, name).rpartition(":")
            if not host or not port.isdigit() or port_problem(int(port)):
                yield f"{variable} must be host:port, got {getattr(self, name)!r}"

    def payment_ttl(self, spec: Mapping[str, Any]) -> int:
        """The checkout's payment TTL in seconds, never above the cap.

        A Checkout created with kubectl may ask for up to the CRD's maximum; the
        operator clamps it rather than rejecting it (the stock is already free to
        reserve, and a shorter window is a smaller harm than no sale), and says so
        in the PaymentReady condition (:meth:`payment_ttl_message`). The REST API
        refuses such a request instead, since there the buyer can be told.
        """
        return max(1, min(_asked_ttl(spec), self.max_payment_ttl_seconds))

    def payment_ttl_message(self, spec: Mapping[str, Any]) -> str:
        """The PaymentReady condition's message, naming a clamped TTL."""
        asked = _asked_ttl(spec)
        if asked <= self.max_payment_ttl_seconds:
            return "waiting for the buyer to pay"
        return (
            f"waiting for the buyer to pay; paymentTTLSeconds {asked} was capped"
            f" at {self.max_payment_ttl_seconds} (CHECKOUT_MAX_PAYMENT_TTL_SECONDS)"
        )

    @classmethod
    def from_env(cls) -> OperatorSettings:
        ttl = env_int("CHECKOUT_TTL_AFTER_FINISHED_SECONDS", 3600)
        max_payment_ttl = env_int(
            "CHECKOUT_MAX_PAYMENT_TTL_SECONDS", DEFAULT_MAX_PAYMENT_TTL_SECONDS
        )
        if problem := cap_problem(max_payment_ttl):
            raise ConfigError(f"CHECKOUT_MAX_PAYMENT_TTL_SECONDS: {problem}")
        return cls(
            database_url=env_secret("CHECKOUT_DATABASE_URL"),
            db_schema=env_str("CHECKOUT_DB_SCHEMA", "checkouts"),
            namespace=env_optional("CHECKOUT_NAMESPACE"),
            nats_url=env_str("CHECKOUT_NATS_URL", "nats://127.0.0.1:4222"),
            nats_credentials=NatsCredentials.from_env(),
            events_namespace=env_optional("EVENTS_NAMESPACE"),
            redis_url=env_secret("CHECKOUT_REDIS_URL", "redis://127.0.0.1:6379/0"),
            user_service=env_str("CHECKOUT_USER_SERVICE", "127.0.0.1:18101"),
            product_service=env_str("CHECKOUT_PRODUCT_SERVICE", "127.0.0.1:18201"),
            service_token=env_service_tokens()[0],
            fee=env_int("CHECKOUT_FEE", 0),
            vouchers=_vouchers(env_str("CHECKOUT_VOUCHERS", "{}")),
            ttl_after_finished=dt.timedelta(seconds=ttl) if ttl >= 0 else None,
            payment_setup_deadline=dt.timedelta(
                seconds=env_int("CHECKOUT_PAYMENT_SETUP_DEADLINE_SECONDS", 300)
            ),
            max_payment_attempts=env_int("CHECKOUT_MAX_PAYMENT_ATTEMPTS", 5),
            max_payment_ttl_seconds=max_payment_ttl,
            poll_interval=env_float("CHECKOUT_POLL_INTERVAL_SECONDS", 60.0),
            poll_rate=env_float("CHECKOUT_POLL_RATE", 10.0),
            poll_min_age=env_float("CHECKOUT_POLL_MIN_AGE_SECONDS", 10.0),
            inbox_look_after=env_float("CHECKOUT_INBOX_LOOK_AFTER_SECONDS", 1.0),
            late_watch_interval=env_float("CHECKOUT_LATE_WATCH_INTERVAL_SECONDS", 300.0),
            late_payment_window=dt.timedelta(
                seconds=env_int("CHECKOUT_LATE_PAYMENT_WINDOW_SECONDS", 3600)
            ),
            refund_retry_base=dt.timedelta(
                seconds=env_float("CHECKOUT_REFUND_RETRY_SECONDS", 30.0)
            ),
            arq_queue=env_str("CHECKOUT_EXPIRY_QUEUE", "arq:queue"),
            workers=env_int("CHECKOUT_WORKERS", 8),
            events=env_str("CHECKOUT_EVENTS", "milestones"),
            metrics_port=env_int("CHECKOUT_METRICS_PORT", 0),
            lease_namespace=env_optional("CHECKOUT_LEASE_NAMESPACE")
            or env_optional("CHECKOUT_NAMESPACE")
            or "default",
            lease_name=env_str("CHECKOUT_LEASE_NAME", "checkout-operator"),
            lease_duration=env_float("CHECKOUT_LEASE_DURATION_SECONDS", 15.0),
            lease_renew_every=env_float("CHECKOUT_LEASE_RENEW_SECONDS", 5.0),
            poll_tick=env_float("CHECKOUT_POLL_TICK_SECONDS", 0.2),
            returns_tick=env_float("CHECKOUT_RETURNS_TICK_SECONDS", 1.0),
            final_event_tick=env_float("CHECKOUT_FINAL_EVENT_TICK_SECONDS", 5.0),
            final_event_grace=dt.timedelta(
                seconds=env_float("CHECKOUT_FINAL_EVENT_GRACE_SECONDS", 30.0)
            ),
            sweep_every=env_float("CHECKOUT_SWEEP_SECONDS", 60.0),
            sweep_min_age=dt.timedelta(seconds=env_float("CHECKOUT_SWEEP_MIN_AGE_SECONDS", 30.0)),
        )
