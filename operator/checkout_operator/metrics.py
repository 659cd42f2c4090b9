"""Prometheus metrics of the operator (served on CHECKOUT_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRANSITIONS = Counter(
    "checkout_transitions_total", "Phase changes written, by target phase", ["phase"]
)
CHECKOUTS = Gauge("checkouts", "Checkouts the operator sees, by phase", ["phase"])
STEP_SECONDS = Histogram(
    "checkout_step_seconds",
    "Latency of saga steps",
    ["step"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MIDTRANS_ERRORS = Counter(
    "checkout_midtrans_errors_total", "Failed Midtrans calls", ["operation", "kind"]
)
RETRIES = Counter("checkout_reconcile_retries_total", "Reconciliations retried after an error")
PAYMENT_RETURNS = Counter(
    "checkout_payment_returns_total",
    "Money given back on orders that did not settle a checkout, by how and outcome",
    ["how", "outcome"],
)
REFUNDS_FAILING = Gauge(
    "checkout_refunds_failing",
    "Orders whose refund Midtrans refused and that are being retried (a person should look)",
)
UNVERIFIED_PAYMENTS = Counter(
    "checkout_unverified_payments_total",
    "Payment claims that did not hold up against Midtrans' status API, by where seen",
    ["source"],
)
ORPHANED_PAYMENT_PAGES = Counter(
    "checkout_orphaned_payment_pages_total",
    "Snap pages made but not recorded, because another writer recorded one first",
)
LEADER = Gauge(
    "checkout_operator_leader", "1 while this instance holds the operator Lease and acts"
)
LEADER_TRANSITIONS = Counter(
    "checkout_operator_leader_transitions_total",
    "Leadership changes of this instance",
    ["to"],
)
FINAL_EVENTS_RELAYED = Counter(
    "checkout_final_events_relayed_total",
    "Final events published by the outbox relay: left unpublished, or republished"
    " because the reservation was still open",
    ["why"],
)
READ_MODEL_LEVELLED = Counter(
    "checkout_read_model_levelled_total",
    "Read-model rows brought level with the phase the resource ended in",
)
