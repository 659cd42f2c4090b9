"""The README's demo (examples/demo.py) pays only once the checkout has a payment page.

The API answers 202 while the saga is still starting (an operator busy after a restart,
say): the demo once paid at once, and the sandbox answered 404 for the unknown order.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import httpx
import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("checkout_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_202_is_polled_until_the_payment_page_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    demo = load_demo()
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: None)
    phases = iter(["Pending", "Pending", "AwaitingPayment"])
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            return httpx.Response(202, json={"id": "co-1", "phase": "Pending"})
        phase = next(phases)
        page = "https://pay.example/co-1" if phase == "AwaitingPayment" else None
        return httpx.Response(200, json={"id": "co-1", "phase": phase, "redirect_url": page})

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        body = demo.checkout(http, "token", {"id": "p1", "price": 1000}, 1, ttl=60)
    assert body["phase"] == "AwaitingPayment" and body["redirect_url"]
    assert seen == ["POST /api/v1/checkouts"] + ["GET /api/v1/checkouts/co-1"] * 3


def test_a_checkout_that_ended_before_its_page_stops_the_demo() -> None:
    demo = load_demo()

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"id": "co-2", "phase": "Rejected", "reason": "OutOfStock"}
        return httpx.Response(201, content=json.dumps(body).encode())

    with (
        httpx.Client(transport=httpx.MockTransport(answer)) as http,
        pytest.raises(SystemExit, match="ended Rejected"),
    ):
        demo.checkout(http, "token", {"id": "p1", "price": 1000}, 1, ttl=60)


def test_the_demo_pays_the_order_its_payment_page_names() -> None:
    """The page may be a later attempt's Snap order (``<id>~2``): paying the checkout's id
    would get a 404 from the sandbox."""
    demo = load_demo()
    posted: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            form = '<form method="post" action="/_sandbox/transactions/co-3~2/pay">'
            return httpx.Response(200, text=f"<h1>Order co-3~2</h1>{form}<button>Pay</button>")
        posted.append(request.url.path)
        return httpx.Response(200, json={})

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        demo.pay_on_page(http, "http://127.0.0.1:18900/snap/v3/redirection/tok")
    assert posted == ["/_sandbox/transactions/co-3~2/pay"]
