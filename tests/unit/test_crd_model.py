"""The code's model of a Checkout and the CRD's schema must not drift apart."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from checkout_operator import actions, saga
from checkout_operator.saga import HISTORY_LIMIT, Line, Phase, View
from midtrans.models import TransactionStatus
from saga_kit import checkout_status, payment_rules

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2025, 1, 15, 12, 0, 0, tzinfo=dt.UTC)
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "checkout.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return root


def violations(value: Any, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """What in ``value`` the schema does not allow: unknown keys, wrong types, enums, bounds."""
    type_ = schema.get("type")
    if type_ is not None:
        wrong_bool = type_ == "integer" and isinstance(value, bool)
        if wrong_bool or not isinstance(value, JSON_TYPES[type_]):
            return [f"{path}: {value!r} is not {type_}"]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if schema.get("format") == "date-time" and not RFC3339.match(value):
        found.append(f"{path}: {value!r} is not a date-time")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        found.append(f"{path}: longer than {schema['maxLength']}")
    if type_ == "object":
        found += [
            f"{path}.{key}: required" for key in schema.get("required", ()) if key not in value
        ]
        properties = schema.get("properties")
        if properties is not None:  # without properties, an object is free-form (metadata)
            for key, item in value.items():
                if key not in properties:
                    found.append(f"{path}.{key}: not in the CRD schema")
                else:
                    found += violations(item, properties[key], f"{path}.{key}")
    if type_ == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.append(f"{path}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            found += violations(item, schema["items"], f"{path}[{i}]")
    return found


def keys(value: Any, path: str = "") -> Iterator[str]:
    """Every key path in a JSON value; list items as ``[]``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}"
            yield from keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from keys(item, f"{path}[]")


def schema_at(schema: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The schema for a key path (``[]`` steps into array items); None if not declared."""
    node = schema
    for step in path:
        if step == "[]":
            if node.get("type") != "array":
                return None
            node = node["items"]
        else:
            properties = node.get("properties")
            if properties is None or step not in properties:
                return None
            node = properties[step]
    return node


def declared(schema: Mapping[str, Any], path: str) -> bool:
    """Whether a key path from :func:`keys` (``.a.b[].c``) is declared in the schema."""
    return schema_at(schema, tuple(re.findall(r"\[\]|[^.\[\]]+", path))) is not None


def paid_status() -> TransactionStatus:
    return TransactionStatus(
        order_id="order-1~2",
        transaction_status="settlement",
        transaction_id="9aed5972-5b6a-401e-894b-a32c91ed1a3a",
        fraud_status="accept",
        transaction_time="2025-01-15 18:55:00",
        settlement_time="2025-01-15 19:00:00",
    )


def resource(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "checkout.saga.dev/v1alpha1",
        "kind": "Checkout",
        "metadata": {"name": "order-1", "namespace": "shop", "uid": "uid-1", "generation": 3},
        "spec": {
            "userId": "42",
            "items": [{"productId": "p-1", "unitPrice": 10_000, "quantity": 2}],
            "paymentTTLSeconds": 900,
        },
        "status": status
        or {
            "phase": "Pending",
            "history": [{"phase": "Pending", "at": "2025-01-15T11:59:00Z", "reason": "Created"}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": "Starting",
                    "message": "",
                    "lastTransitionTime": "2025-01-15T11:59:00Z",
                    "observedGeneration": 1,
                }
            ],
        },
    }


def awaiting_payment_status(body: dict[str, Any]) -> dict[str, Any]:
    amounts = saga.price([Line("p-1", 10_000, 2)], 1_000, saga.Voucher("P10", percent=10))
    return checkout_status.status_patch(
        body,
        NOW,
        Phase.AWAITING_PAYMENT,
        [
            (Phase.AUTHORIZED, "UserAuthorized"),
            (Phase.RESERVED, "StockReserved"),
            (Phase.AWAITING_PAYMENT, "PaymentPageReady"),
        ],
        [
            ("Authorized", True, "UserAuthorized", "user 42 exists"),
            ("StockReserved", True, "StockReserved", "1 products reserved"),
            ("PaymentReady", True, "SnapTokenIssued", "waiting for the buyer to pay"),
            ("Ready", False, "AwaitingPayment", "not paid yet"),
        ],
        {
            "orderId": "order-1",
            "amounts": amounts.as_status(),
            "payment": {
                "snapToken": "66e4fa55-fdac-4ef9-91b5-733b97d1b862",
                "redirectUrl": "https://app.sandbox.midtrans.com/snap/v3/redirection/66e4fa55",
                "midtransOrderId": "order-1~2",
                **payment_rules.payment_fields(paid_status()),
            },
            "expiresAt": saga.timestamp(NOW + dt.timedelta(minutes=15)),
            "failure": {"reason": str(saga.Reason.PAYMENT_FAILED), "message": "denied"},
        },
    )


def test_the_checker_finds_drift(schema: dict[str, Any]) -> None:
    """The checker below must be able to fail, or the other tests prove nothing."""
    status = schema["properties"]["status"]
    assert violations({"phase": "Paid"}, status) != []
    assert violations({"unknownField": 1}, status) != []
    assert violations({"history": [{"phase": "Pending", "at": "x", "when": "y"}]}, status) == [
        ".history[0].at: 'x' is not a date-time",
        ".history[0].when: not in the CRD schema",
    ]
    assert violations({"conditions": [{"type": "A", "status": "Maybe"}]}, status) != []
    assert violations({"observedGeneration": "3"}, status) != []
    assert violations({"observedGeneration": True}, status) != []
    assert violations({"history": [{"phase": "P"}]}, status) == [".history[0].at: required"]


def test_the_status_written_fits_the_crd(schema: dict[str, Any]) -> None:
    status = awaiting_payment_status(resource())
    # Everything the operator may write is present, so every key is checked.
    assert set(status) == {
        "phase",
        "observedGeneration",
        "history",
        "conditions",
        "orderId",
        "amounts",
        "payment",
        "expiresAt",
        "failure",
    }
    assert set(status["payment"]) == {
        "snapToken",
        "redirectUrl",
        "midtransOrderId",
        "transactionId",
        "transactionStatus",
        "fraudStatus",
        "paidAt",
    }
    assert len(status["history"]) == 4
    assert {c["type"] for c in status["conditions"]} == {
        "Ready",
        "Authorized",
        "StockReserved",
        "PaymentReady",
    }
    assert violations(status, schema["properties"]["status"], "status") == []
    # And the whole resource, status included.
    assert violations({**resource(), "status": status}, schema) == []


def test_every_key_of_the_status_is_declared(schema: dict[str, Any]) -> None:
    status = awaiting_payment_status(resource())
    paths = set(keys(status))
    assert ".history[].reason" in paths
    assert ".conditions[].lastTransitionTime" in paths
    assert ".conditions[].observedGeneration" in paths
    undeclared = [p for p in sorted(paths) if not declared(schema["properties"]["status"], p)]
    assert undeclared == []


@pytest.mark.parametrize("phase", [Phase.SETTLED, Phase.CANCELLED, Phase.EXPIRED, Phase.REJECTED])
def test_a_final_status_fits_the_crd(schema: dict[str, Any], phase: Phase) -> None:
    before = awaiting_payment_status(resource())
    body = resource(before)
    status = checkout_status.status_patch(
        body,
        NOW + dt.timedelta(minutes=5),
        phase,
        [(phase, "Paid" if phase is Phase.SETTLED else "PaymentExpired")],
        [("Ready", phase is Phase.SETTLED, "Done", "done")],
        {"orderId": "order-1", "failure": {"reason": "PaymentExpired", "message": "m" * 1024}},
    )
    assert status["phase"] == phase.value
    assert violations(status, schema["properties"]["status"], "status") == []
    # The resource as written reads back as the terminal phase.
    assert View.of({**body, "status": status}).phase is phase


def test_the_settlement_written_by_the_listener_fits_the_crd(schema: dict[str, Any]) -> None:
    body = resource(awaiting_payment_status(resource()))
    payment = payment_rules.payment_fields(paid_status())
    status = checkout_status.settlement_patch(body, NOW + dt.timedelta(minutes=5), payment)
    # A merge patch: null removes the field, so what is stored has none.
    stored = {**status, "payment": {k: v for k, v in status["payment"].items() if v is not None}}
    assert violations(stored, schema["properties"]["status"], "status") == []
    assert View.of({**body, "status": status}).phase is Phase.SETTLED
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "True" and ready["Paid"] == "True"
    # No payment link once finished (null removes it in a merge patch).
    assert status["payment"]["snapToken"] is None


def test_a_long_history_stays_within_the_crd_bound(schema: dict[str, Any]) -> None:
    history = [
        {"phase": "Pending", "at": f"2025-01-15T11:{i:02d}:00Z", "reason": f"r{i}"}
        for i in range(HISTORY_LIMIT + 10)
    ]
    body = resource({"phase": "Pending", "history": history})
    status = awaiting_payment_status(body)
    assert len(status["history"]) == HISTORY_LIMIT
    assert violations(status, schema["properties"]["status"], "status") == []


def test_phases_are_the_crd_enum(schema: dict[str, Any]) -> None:
    enum = schema["properties"]["status"]["properties"]["phase"]["enum"]
    assert len(enum) == len(set(enum))
    assert set(enum) == {p.value for p in saga.Phase}


def test_history_limit_is_the_crd_bound(schema: dict[str, Any]) -> None:
    history = schema["properties"]["status"]["properties"]["history"]
    assert history["maxItems"] == HISTORY_LIMIT


def test_condition_statuses_are_in_the_crd_enum(schema: dict[str, Any]) -> None:
    allowed = schema_at(schema, ("status", "conditions", "[]", "status"))
    assert allowed is not None
    for value in (True, False):
        (cond,) = saga.with_condition([], "Ready", value, "R", "m", NOW, 1)
        assert cond["status"] in allowed["enum"]


@pytest.mark.parametrize(
    "ts",
    [
        paid_status(),
        TransactionStatus(order_id="o", transaction_status="capture", fraud_status="accept"),
        TransactionStatus(order_id="o", transaction_status="pending", transaction_id="t-1"),
        TransactionStatus(order_id="o", transaction_status="expire"),
    ],
)
def test_payment_status_fits_the_crd(schema: dict[str, Any], ts: TransactionStatus) -> None:
    payment_schema = schema["properties"]["status"]["properties"]["payment"]
    payment = payment_rules.payment_fields(ts)
    assert set(payment) <= set(payment_schema["properties"])
    assert violations(payment, payment_schema, "payment") == []
    assert payment["transactionStatus"] == ts.transaction_status


def test_payment_status_of_a_settlement(schema: dict[str, Any]) -> None:
    payment = payment_rules.payment_fields(paid_status())
    assert payment == {
        "transactionId": "9aed5972-5b6a-401e-894b-a32c91ed1a3a",
        "transactionStatus": "settlement",
        "fraudStatus": "accept",
        # Midtrans reports GMT+7; the resource holds UTC.
        "paidAt": "2025-01-15T12:00:00Z",
    }
    # What is written is read back the same way.
    view = View.of({"status": {"phase": "AwaitingPayment", "payment": payment}})
    assert view.payment is saga.PaymentState.PAID


class Recording(Mapping[str, Any]):
    """A read-only JSON object that notes every key read from it (and from what it holds)."""

    def __init__(self, data: Mapping[str, Any], seen: set[str], path: str = "") -> None:
        self._data = data
        self._seen = seen
        self._path = path

    def _wrap(self, value: Any, path: str) -> Any:
        if isinstance(value, Mapping):
            return Recording(value, self._seen, path)
        if isinstance(value, list):
            return [self._wrap(item, f"{path}[]") for item in value]
        return value

    def __getitem__(self, key: str) -> Any:
        self._seen.add(f"{self._path}.{key}")
        return self._wrap(self._data[key], f"{self._path}.{key}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def full_resource() -> dict[str, Any]:
    body = resource(awaiting_payment_status(resource()))
    body["spec"].update(
        cancelRequested=True,
        currency="IDR",
        voucher="P10",
        customer={"firstName": "Ani", "lastName": "W", "email": "a@x.id", "phone": "+62"},
    )
    return body


def test_the_view_reads_only_declared_fields(schema: dict[str, Any]) -> None:
    seen: set[str] = set()
    view = View.of(Recording(full_resource(), seen))
    assert view.cancel_requested is True
    assert view.phase is Phase.AWAITING_PAYMENT
    assert view.payment is saga.PaymentState.PAID
    assert view.expires_at == NOW + dt.timedelta(minutes=15)
    assert ".spec.cancelRequested" in seen
    assert ".status.payment.transactionStatus" in seen
    undeclared = [p for p in sorted(seen) if not declared(schema, p)]
    assert undeclared == []


def test_a_finished_view_reads_only_declared_fields(schema: dict[str, Any]) -> None:
    body = full_resource()
    body["status"]["phase"] = "Settled"
    seen: set[str] = set()
    view = View.of(Recording(body, seen))
    assert view.finished_at == NOW
    assert ".status.history[].at" in seen
    for path in seen:
        assert declared(schema, path), path


def test_the_lines_read_only_declared_item_fields(schema: dict[str, Any]) -> None:
    seen: set[str] = set()
    lines = actions._lines(cast(dict[str, Any], Recording(full_resource(), seen)))
    assert lines == [Line("p-1", 10_000, 2)]
    assert {".spec.items[].productId", ".spec.items[].unitPrice", ".spec.items[].quantity"} <= seen
    for path in seen:
        assert declared(schema, path), path


def test_the_spec_fields_the_operator_reads_are_declared(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    used = {"userId", "items", "cancelRequested", "paymentTTLSeconds", "currency", "voucher"}
    assert used | {"customer"} == set(spec["properties"])
    assert {"userId", "items"} <= set(spec["required"])
    assert spec["properties"]["cancelRequested"]["type"] == "boolean"
    assert spec["properties"]["paymentTTLSeconds"]["type"] == "integer"
    # The operator's fallback TTL is the CRD's default.
    assert spec["properties"]["paymentTTLSeconds"]["default"] == 900
    item = spec["properties"]["items"]["items"]
    assert set(item["required"]) == {"productId", "unitPrice", "quantity"}


def test_every_customer_field_is_forwarded_to_midtrans(schema: dict[str, Any]) -> None:
    fields = schema_at(schema, ("spec", "customer"))
    assert fields is not None
    customer = {name: f"value-{name}" for name in fields["properties"]}
    forwarded = actions._customer(customer)
    assert forwarded is not None
    assert sorted(forwarded.values()) == sorted(customer.values())


def test_the_example_fits_the_crd(schema: dict[str, Any]) -> None:
    example = yaml.safe_load((ROOT / "examples" / "checkout.yaml").read_text())
    assert violations(example, schema) == []
    assert View.of(example).phase is Phase.PENDING
    assert violations(full_resource(), schema) == []


def test_the_crd_phase_rule_is_the_sagas_reachability(schema: dict[str, Any]) -> None:
    """status.phase may only move along the saga: the CEL map must be can_reach, exactly."""
    rules = schema["properties"]["status"]["x-kubernetes-validations"]
    (rule,) = [r["rule"] for r in rules if "oldSelf.phase" in r["rule"]]
    found = re.search(r"\{('Pending'.*\])\}\[oldSelf\.phase\]", rule)
    assert found is not None, rule
    table = cast(dict[str, list[str]], yaml.safe_load("{" + found.group(1) + "}"))
    expected = {p.value: [q.value for q in Phase if saga.can_reach(p, q)] for p in Phase}
    assert table == expected
    for terminal in saga.TERMINAL:
        assert table[terminal.value] == []
