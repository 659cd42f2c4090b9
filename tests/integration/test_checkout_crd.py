"""The Checkout CRD on the real apiserver: kubectl use, printer columns, validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Platform

REPO = Path(__file__).resolve().parents[2]


def checkout(name: str = "order-1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "userId": "42",
        "items": [{"productId": "p-1", "unitPrice": 10000, "quantity": 2}],
    }
    body.update(spec)
    return {
        "apiVersion": "checkout.saga.dev/v1alpha1",
        "kind": "Checkout",
        "metadata": {"name": name},
        "spec": body,
    }


def apply(platform: Platform, namespace: str, obj: dict[str, Any], check: bool = True) -> Any:
    return platform.kubectl(
        "apply", "-f", "-", namespace=namespace, stdin=json.dumps(obj), check=check
    )


def test_example_applies_and_lists_with_printer_columns(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", str(REPO / "examples" / "checkout.yaml"), namespace=namespace)
    # The status subresource: status is written apart from spec, as the operator will.
    platform.kubectl(
        "patch",
        "checkout",
        "order-example-0001",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "AwaitingPayment",
                    "amounts": {"total": 20000},
                    "expiresAt": "2030-01-01T00:00:00Z",
                }
            }
        ),
        namespace=namespace,
    )
    out = platform.kubectl("get", "checkouts", namespace=namespace).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "TOTAL", "USER", "REASON", "EXPIRES", "AGE"]
    assert row.split()[:4] == ["order-example-0001", "AwaitingPayment", "20000", "42"]
    # Short name and category reach the same objects.
    assert "order-example-0001" in platform.kubectl("get", "cko", namespace=namespace).stdout
    assert "order-example-0001" in platform.kubectl("get", "saga", namespace=namespace).stdout


def test_defaults_are_applied(platform: Platform, namespace: str) -> None:
    apply(platform, namespace, checkout())
    got = json.loads(
        platform.kubectl("get", "cko", "order-1", "-o", "json", namespace=namespace).stdout
    )
    assert got["spec"]["paymentTTLSeconds"] == 900
    assert got["spec"]["currency"] == "IDR"


def test_status_subresource_ignores_spec_and_main_resource_ignores_status(
    platform: Platform, namespace: str
) -> None:
    apply(platform, namespace, checkout())
    platform.kubectl(
        "patch",
        "cko",
        "order-1",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Settled"}}',
        namespace=namespace,
    )
    got = json.loads(
        platform.kubectl("get", "cko", "order-1", "-o", "json", namespace=namespace).stdout
    )
    assert "status" not in got or got["status"].get("phase") != "Settled"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"items": []},
            "spec.items: Invalid value: 0: spec.items in body should have at least 1 items",
        ),
        (
            {"items": [{"productId": "p", "unitPrice": 1, "quantity": 0}]},
            "spec.items[0].quantity: Invalid value: 0",
        ),
        (
            {"items": [{"productId": "p", "unitPrice": -5, "quantity": 1}]},
            "spec.items[0].unitPrice: Invalid value: -5",
        ),
        (
            {
                "items": [
                    {"productId": "p", "unitPrice": 1, "quantity": 1},
                    {"productId": "p", "unitPrice": 1, "quantity": 3},
                ]
            },
            'spec.items[1]: Duplicate value: {"productId":"p"}',
        ),
        ({"items": [{"productId": "p", "quantity": 1}]}, "spec.items[0].unitPrice: Required value"),
        ({"userId": ""}, "spec.userId: Invalid value"),
        ({"currency": "USD"}, 'spec.currency: Unsupported value: "USD"'),
        ({"paymentTTLSeconds": 0}, "spec.paymentTTLSeconds: Invalid value: 0"),
        # Once accepted: a NUL id was retried for ever, a huge price stayed Pending for ever.
        (
            {"items": [{"productId": "p\x00", "unitPrice": 1, "quantity": 1}]},
            "spec.items[0].productId: Invalid value",
        ),
        (
            {"items": [{"productId": "p", "unitPrice": 10**13, "quantity": 1}]},
            "spec.items[0].unitPrice: Invalid value: 10000000000000: spec.items[0].unitPrice"
            " in body should be less than or equal to 1000000000000",
        ),
        (
            {"items": [{"productId": "p", "unitPrice": 0, "quantity": 1}]},
            "spec.items[0].unitPrice: Invalid value: 0",
        ),
        ({"userId": "u\x00"}, "spec.userId: Invalid value"),
    ],
    ids=[
        "empty-items",
        "quantity-0",
        "negative-price",
        "duplicate-product",
        "missing-price",
        "empty-user",
        "currency",
        "ttl-0",
        "nul-product-id",
        "huge-price",
        "price-0",
        "nul-user-id",
    ],
)
def test_invalid_checkouts_are_refused_naming_the_field(
    platform: Platform, namespace: str, spec: dict[str, Any], expected: str
) -> None:
    result = apply(platform, namespace, checkout(**spec), check=False)
    assert result.returncode != 0
    assert 'The Checkout "order-1" is invalid' in result.stderr
    assert expected in result.stderr
    assert platform.kubectl("get", "cko", namespace=namespace).stdout == ""


def test_name_longer_than_a_midtrans_order_id_is_refused(
    platform: Platform, namespace: str
) -> None:
    result = apply(platform, namespace, checkout(name="o" * 48), check=False)
    assert result.returncode != 0
    assert "metadata.name: must be at most 47 characters" in result.stderr


def test_spec_is_immutable_except_the_cancel_request(platform: Platform, namespace: str) -> None:
    apply(platform, namespace, checkout())
    changed = platform.kubectl(
        "patch",
        "cko",
        "order-1",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"items": [{"productId": "p-1", "unitPrice": 1, "quantity": 2}]}}),
        namespace=namespace,
        check=False,
    )
    assert changed.returncode != 0
    assert (
        "spec is immutable after creation; only spec.cancelRequested may change" in changed.stderr
    )

    voucher = platform.kubectl(
        "patch",
        "cko",
        "order-1",
        "--type=merge",
        "-p",
        '{"spec": {"voucher": "FREE"}}',
        namespace=namespace,
        check=False,
    )
    assert voucher.returncode != 0 and "spec is immutable" in voucher.stderr

    platform.kubectl(
        "patch",
        "cko",
        "order-1",
        "--type=merge",
        "-p",
        '{"spec": {"cancelRequested": true}}',
        namespace=namespace,
    )
    withdrawn = platform.kubectl(
        "patch",
        "cko",
        "order-1",
        "--type=merge",
        "-p",
        '{"spec": {"cancelRequested": false}}',
        namespace=namespace,
        check=False,
    )
    assert withdrawn.returncode != 0
    assert "spec.cancelRequested: Invalid value" in withdrawn.stderr
    assert "cannot be withdrawn once set" in withdrawn.stderr


def test_crd_file_is_a_single_structural_crd() -> None:
    docs = list(yaml.safe_load_all((REPO / "crds" / "checkout.yaml").read_text()))
    assert len(docs) == 1
    names = docs[0]["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "Checkout",
        ["cko"],
        ["saga"],
    )


def _patch_status(platform: Platform, namespace: str, status: dict[str, Any]) -> Any:
    return platform.kubectl(
        "patch",
        "checkout",
        "order-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        namespace=namespace,
        check=False,
    )


def test_status_phase_only_moves_forward_and_terminal_phases_never_change(
    platform: Platform, namespace: str
) -> None:
    apply(platform, namespace, checkout())
    assert _patch_status(platform, namespace, {"phase": "AwaitingPayment"}).returncode == 0
    back = _patch_status(platform, namespace, {"phase": "Pending"})
    assert back.returncode != 0 and "only moves forward" in back.stderr
    assert _patch_status(platform, namespace, {"phase": "Expired"}).returncode == 0
    for phase in ("Settled", "AwaitingPayment", "Cancelled"):
        refused = _patch_status(platform, namespace, {"phase": phase})
        assert refused.returncode != 0 and "terminal phase never changes" in refused.stderr
    removed = _patch_status(platform, namespace, {"phase": None})
    assert removed.returncode != 0 and "cannot be removed" in removed.stderr
    # Everything else in the status (conditions, say) can still be written.
    ok = _patch_status(platform, namespace, {"phase": "Expired", "orderId": "order-1"})
    assert ok.returncode == 0, ok.stderr
    got = platform.kubectl("get", "checkout", "order-1", "-o", "json", namespace=namespace)
    assert json.loads(got.stdout)["status"]["phase"] == "Expired"


def test_conditions_need_every_field_kubernetes_defines_and_failures_show_their_reason(
    platform: Platform, namespace: str
) -> None:
    apply(platform, namespace, checkout())
    full = {
        "type": "Ready",
        "status": "False",
        "reason": "OutOfStock",
        "message": "product p-1 is out of stock",
        "lastTransitionTime": "2026-11-28T07:00:00Z",
        "observedGeneration": 1,
    }
    for missing in ("reason", "message", "lastTransitionTime", "observedGeneration"):
        partial = {k: v for k, v in full.items() if k != missing}
        refused = _patch_status(platform, namespace, {"conditions": [partial]})
        assert refused.returncode != 0 and missing in refused.stderr, (missing, refused.stderr)
    bad_reason = _patch_status(
        platform, namespace, {"conditions": [{**full, "reason": "out of stock"}]}
    )
    assert bad_reason.returncode != 0 and "reason" in bad_reason.stderr
    ended = {
        "phase": "Rejected",
        "conditions": [full],
        "failure": {"reason": "OutOfStock", "message": full["message"]},
    }
    assert _patch_status(platform, namespace, ended).returncode == 0
    out = platform.kubectl("get", "checkouts", namespace=namespace).stdout
    header, row = out.splitlines()[:2]
    reason = header.split().index("REASON")
    assert row.split()[reason - 1] == "OutOfStock"  # TOTAL and EXPIRES are empty here
