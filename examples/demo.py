"""A scripted demo against the system `scripts/up` runs.

1. registers a buyer and a shop owner, the owner lists a product;
2. checks out (a Checkout resource), pays through the Midtrans sandbox, and shows
   `kubectl get checkouts` reaching Settled;
3. checks out again with a 5-second payment TTL, doesn't pay, and shows the
   checkout Expired and the stock back.

    scripts/up && .venv/bin/python examples/demo.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from saga_devenv import apps
from saga_devenv.config import DevConfig

CFG = DevConfig.from_env()
USERS = f"http://127.0.0.1:{apps.USER_HTTP}/api/v1"
PRODUCTS = f"http://127.0.0.1:{apps.PRODUCT_HTTP}/api/v1"
SANDBOX = f"http://127.0.0.1:{apps.SANDBOX}"


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [str(CFG.binary("kubectl")), f"--kubeconfig={CFG.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def account(http: httpx.Client, role: str) -> tuple[str, str]:
    name = f"{role}{uuid.uuid4().hex[:6]}"
    user = http.post(
        f"{USERS}/users",
        json={"username": name, "email": f"{name}@example.com", "password": "demo-passw0rd"},
    )
    user.raise_for_status()
    login = http.post(f"{USERS}/auth/login", json={"username": name, "password": "demo-passw0rd"})
    login.raise_for_status()
    return str(user.json()["id"]), str(login.json()["access_token"])


def checkout(user_id: str, product: dict[str, Any], quantity: int, ttl: int) -> str:
    name = f"demo-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": "checkout.saga.dev/v1alpha1",
        "kind": "Checkout",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "userId": user_id,
            "items": [
                {"productId": product["id"], "unitPrice": product["price"], "quantity": quantity}
            ],
            "paymentTTLSeconds": ttl,
        },
    }
    kubectl("create", "-f", "-", stdin=json.dumps(body))
    return name


def wait_phase(name: str, *phases: str, within: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        body = json.loads(kubectl("get", "checkout", name, "-n", "default", "-o", "json"))
        if (body.get("status") or {}).get("phase") in phases:
            return dict(body)
        time.sleep(0.3)
    raise SystemExit(f"{name} did not reach {phases} within {within}s")


def available(http: httpx.Client, product_id: str) -> int:
    return int(http.get(f"{PRODUCTS}/products/{product_id}").json()["available"])


def main() -> int:
    with httpx.Client(timeout=10) as http:
        buyer_id, _ = account(http, "buyer")
        _, owner_token = account(http, "owner")
        product = http.post(
            f"{PRODUCTS}/products",
            json={"name": f"Kopi Susu {uuid.uuid4().hex[:4]}", "price": 25_000, "stock": 10},
            headers={"Authorization": f"Bearer {owner_token}"},
        )
        product.raise_for_status()
        item = product.json()
        print(f"product {item['name']}: {item['available']} available at {item['price']} IDR")

        print("\n== checkout 1: pay ==")
        paid = checkout(buyer_id, item, 2, ttl=900)
        body = wait_phase(paid, "AwaitingPayment", "Rejected", "Cancelled")
        print(
            f"{paid}: {body['status']['phase']}, pay at {body['status']['payment']['redirectUrl']}"
        )
        print(f"available now: {available(http, item['id'])}")
        http.post(f"{SANDBOX}/_sandbox/transactions/{paid}/pay", json={}).raise_for_status()
        wait_phase(paid, "Settled")
        print(kubectl("get", "checkouts", "-n", "default", paid))

        print("== checkout 2: let it expire (5 s) ==")
        lapsed = checkout(buyer_id, item, 3, ttl=5)
        wait_phase(lapsed, "AwaitingPayment")
        print(f"{lapsed}: AwaitingPayment, available now: {available(http, item['id'])}")
        wait_phase(lapsed, "Expired", within=60)
        time.sleep(1)
        print(kubectl("get", "checkouts", "-n", "default", lapsed))
        left = available(http, item["id"])
        print(f"available after expiry: {left} (10 - 2 sold)")
        return 0 if left == 8 else 1


if __name__ == "__main__":
    sys.exit(main())
