"""A scripted demo against the system `scripts/up` runs, over HTTP like a shop.

1. registers a buyer and a shop owner, the owner lists a product;
2. checks out through the REST checkout API, pays through the Midtrans sandbox
   (which notifies the webhook listener), and shows `kubectl get checkouts`
   reaching Settled;
3. checks out again with a 5-second payment TTL, doesn't pay, and shows the
   checkout Expired and the stock back.

    scripts/up && .venv/bin/python examples/demo.py
"""

from __future__ import annotations

import re
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
CHECKOUTS = f"http://127.0.0.1:{apps.CHECKOUT_API}/api/v1/checkouts"


ENDED = ("Settled", "Rejected", "Cancelled", "Expired")


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


def checkout(
    http: httpx.Client, token: str, product: dict[str, Any], qty: int, ttl: int
) -> dict[str, Any]:
    reply = http.post(
        CHECKOUTS,
        json={
            "products": [{"id": product["id"], "price": product["price"], "quantity": qty}],
            "payment_ttl_seconds": ttl,
        },
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
    )
    if reply.status_code not in (201, 202):
        raise SystemExit(f"checkout failed: {reply.status_code} {reply.text}")
    body = dict(reply.json())
    if reply.status_code == 202:  # still in progress (a busy operator): poll, as it says
        body = wait_phase(http, token, body["id"], "AwaitingPayment", *ENDED)
    if body["phase"] != "AwaitingPayment":
        raise SystemExit(f"checkout {body['id']} ended {body['phase']}: {body}")
    return body


def wait_phase(
    http: httpx.Client, token: str, cid: str, *phases: str, within: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        body = http.get(f"{CHECKOUTS}/{cid}", headers={"Authorization": f"Bearer {token}"}).json()
        if body.get("phase") in phases:
            return dict(body)
        time.sleep(0.3)
    raise SystemExit(f"{cid} did not reach {phases} within {within}s")


def pay_on_page(http: httpx.Client, redirect_url: str) -> None:
    """Press "Pay" on the sandbox's payment page, as the buyer would: the page names
    the Midtrans order it is for (the checkout's id, or ``<id>~<n>`` when an earlier
    payment page's answer was lost)."""
    page = http.get(redirect_url)
    page.raise_for_status()
    form = re.search(r'action="(/_sandbox/transactions/[^"]+/pay)"', page.text)
    if form is None:
        raise SystemExit(f"no Pay button on {redirect_url}")
    http.post(f"{SANDBOX}{form[1]}", json={}).raise_for_status()


def available(http: httpx.Client, product_id: str) -> int:
    return int(http.get(f"{PRODUCTS}/products/{product_id}").json()["available"])


def main() -> int:
    with httpx.Client(timeout=30) as http:
        _, buyer = account(http, "buyer")
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
        paid = checkout(http, buyer, item, 2, ttl=900)
        print(f"POST /api/v1/checkouts -> {paid['id']} {paid['phase']} total {paid['total']}")
        print(f"  pay at {paid['redirect_url']}")
        print(f"available now: {available(http, item['id'])}")
        pay_on_page(http, paid["redirect_url"])
        wait_phase(http, buyer, paid["id"], "Settled")
        print(kubectl("get", "checkouts", "-n", "default", paid["id"]))

        print("== checkout 2: let it expire (5 s) ==")
        lapsed = checkout(http, buyer, item, 3, ttl=5)
        print(f"{lapsed['id']}: {lapsed['phase']}, available now: {available(http, item['id'])}")
        wait_phase(http, buyer, lapsed["id"], "Expired")
        time.sleep(1)
        print(kubectl("get", "checkouts", "-n", "default", lapsed["id"]))
        left = available(http, item["id"])
        print(f"available after expiry: {left} (10 - 2 sold)")
        return 0 if left == 8 else 1


if __name__ == "__main__":
    sys.exit(main())
