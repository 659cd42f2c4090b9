"""A release of the chart on the local node, as the node tests drive it: helm, the
Services reached from the host, and shoppers who buy through the REST API's NodePort
and pay at the in-cluster Midtrans sandbox."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from saga_devenv import node
from tests.helpers.waiting import deadline, eventually_sync
from tests.node.conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "checkout-saga"
API_NODE_PORT = 31080
LISTENER_NODE_PORT = 31081
PASSWORD = "node-passw0rd"
PRICE = 25_000
FINISHED = ("Settled", "Expired", "Cancelled", "Rejected")


def helm(cluster: Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cfg = cluster.cfg
    return subprocess.run(
        [str(cfg.binary("helm")), f"--kubeconfig={cfg.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={"HOME": str(cfg.run_dir / "helm-home"), "PATH": "/usr/bin:/bin"},
    )


# A pod in one of these will not become Ready by waiting longer.
HOPELESS = ("CrashLoopBackOff", "ErrImageNeverPull", "CreateContainerConfigError")


def helm_wait(cluster: Cluster, namespace: str, *args: str, seconds: float = 300) -> str:
    """``helm <args> --wait``, given up as soon as a pod of the namespace crashes again
    and again or cannot start (a broken image or value), with that container's log;
    helm alone would wait out its whole timeout. Returns helm's output."""
    cfg = cluster.cfg
    limit = deadline(seconds)
    argv = [str(cfg.binary("helm")), f"--kubeconfig={cfg.kubeconfig}", *args, "--wait"]
    argv += [f"--namespace={namespace}", f"--timeout={limit.seconds:.0f}s"]
    env = {"HOME": str(cfg.run_dir / "helm-home"), "PATH": "/usr/bin:/bin"}
    helm_run = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        while helm_run.poll() is None:
            if broken := _hopeless_container(cluster, namespace):
                raise AssertionError(f"helm {args[0]}: {broken}")
            limit.check(f"helm {args[0]} --wait")
            time.sleep(1)
        output = helm_run.communicate()[0]
        assert helm_run.returncode == 0, f"helm {args[0]} failed:\n{output}"
        return output
    finally:
        if helm_run.poll() is None:
            helm_run.kill()
            helm_run.communicate()


def _hopeless_container(cluster: Cluster, namespace: str) -> str | None:
    for pod in cluster.get(namespace, "pods")["items"]:
        for status in pod["status"].get("containerStatuses", []):
            reason = status.get("state", {}).get("waiting", {}).get("reason")
            if reason in HOPELESS or status.get("restartCount", 0) >= 2:
                name = pod["metadata"]["name"]
                log = subprocess.run(
                    [
                        *node.kubectl(cluster.cfg),
                        f"--namespace={namespace}",
                        "logs",
                        name,
                        "--previous",
                        "--tail=15",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=60,
                )
                return (
                    f"pod {name} cannot start ({reason or 'restarting'}):\n{log.stdout}{log.stderr}"
                )
    return None


@dataclass(frozen=True)
class Release:
    cluster: Cluster
    name: str
    namespace: str

    @property
    def prefix(self) -> str:
        return f"{self.name}-checkout-saga-"

    def service_url(self, component: str, port: int) -> str:
        """A ClusterIP Service, reached from the host (the node) through kube-proxy."""
        got = self.cluster.get(self.namespace, "service", f"{self.prefix}{component}")
        return f"http://{got['spec']['clusterIP']}:{port}"

    @property
    def api(self) -> str:
        return f"http://{self.cluster.node_ip}:{API_NODE_PORT}"

    @property
    def listener(self) -> str:
        return f"http://{self.cluster.node_ip}:{LISTENER_NODE_PORT}"

    @property
    def sandbox(self) -> str:
        return self.service_url("midtrans-sandbox", 18900)

    def pods(self, component: str) -> list[dict[str, Any]]:
        """The component's pods that are not being deleted."""
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"
        items = self.cluster.get(self.namespace, "pods", "-l", selector)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def exec_python(self, component: str, code: str) -> str:
        """Runs ``python -c code`` in the component's pod, as that pod's identity."""
        [pod] = self.pods(component)
        return self.cluster.kubectl(
            "exec", pod["metadata"]["name"], "--", "python", "-c", code, namespace=self.namespace
        )

    def checkout(self, name: str) -> dict[str, Any]:
        return self.cluster.get(self.namespace, "checkout", name)  # type: ignore[no-any-return]

    def phases(self) -> dict[str, str | None]:
        items = self.cluster.get(self.namespace, "checkouts")["items"]
        return {c["metadata"]["name"]: c.get("status", {}).get("phase") for c in items}


@dataclass
class Shop:
    """Buyers and an owner with one product, through the in-cluster User and Product
    services; checkouts through the API's NodePort, payments at the sandbox."""

    release: Release
    http: httpx.Client
    owner: dict[str, str]
    product: dict[str, Any]

    @classmethod
    def open(cls, release: Release, http: httpx.Client, stock: int) -> Shop:
        owner = account(http, release)
        listed = http.post(
            f"{release.service_url('product-service', 18200)}/api/v1/products",
            json={"name": f"Kopi {uuid.uuid4().hex[:8]}", "price": PRICE, "stock": stock},
            headers=owner,
        )
        assert listed.status_code == 201, listed.text
        return cls(release, http, owner, listed.json())

    def checkout(
        self, buyer: dict[str, str], quantity: int, ttl: int | None = None, key: str | None = None
    ) -> httpx.Response:
        """POST /api/v1/checkouts to the API's NodePort."""
        line = {"id": self.product["id"], "price": PRICE, "quantity": quantity}
        order: dict[str, Any] = {"products": [line]}
        if ttl is not None:
            order["payment_ttl_seconds"] = ttl
        headers = {**buyer, **({"Idempotency-Key": key} if key else {})}
        return self.http.post(f"{self.release.api}/api/v1/checkouts", json=order, headers=headers)

    def checkout_surely(self, buyer: dict[str, str], ttl: int) -> str:
        """One checkout of one item, its POST retried with the same Idempotency-Key
        while the API cannot be reached (a rollout): one checkout, whatever happens."""
        key = uuid.uuid4().hex
        made: dict[str, str] = {}

        def posted() -> bool:
            try:
                reply = self.checkout(buyer, 1, ttl=ttl, key=key)
            except httpx.TransportError:
                return False
            if reply.status_code >= 500:
                return False
            assert reply.status_code in (200, 201, 202), reply.text
            made["id"] = reply.json()["id"]
            return True

        eventually_sync(posted, within=120, interval=0.5, failure="the API never took the POST")
        return made["id"]

    def page(self, checkout: str) -> str | None:
        """The Midtrans order of the payment page the checkout hands the buyer (after an
        operator restart it may be a second one, ``<id>~2``; the first is never paid)."""
        payment = self.release.checkout(checkout).get("status", {}).get("payment", {})
        return payment.get("midtransOrderId")  # type: ignore[no-any-return]

    def pay(self, checkout: str) -> None:
        """Pays, as the buyer, on the page the checkout shows, once it shows one."""

        def paid() -> bool:
            if not (order := self.page(checkout)):
                return False
            reply = self.http.post(f"{self.release.sandbox}/_sandbox/transactions/{order}/pay")
            assert reply.status_code == 200, (checkout, order, reply.text)
            return True

        eventually_sync(paid, within=120, interval=0.5, failure=f"{checkout} shows no page")

    def kept(self, checkout: str) -> float:
        """The money Midtrans holds for the checkout, over every page it ever asked for
        (``<id>``, ``<id>~2``, ...): settled minus refunded."""
        total = 0.0
        # A page may be missing: journaled, then the operator died before asking Midtrans.
        for n in range(1, 5):
            order = checkout if n == 1 else f"{checkout}~{n}"
            reply = self.http.get(f"{self.release.sandbox}/_sandbox/transactions/{order}")
            if reply.status_code == 404:
                continue
            assert reply.status_code == 200, reply.text
            tx = reply.json()
            if tx["transaction_status"] in ("settlement", "refund", "partial_refund"):
                total += float(tx["gross_amount"]) - float(tx["refunded_amount"] or 0)
        return total

    def stock_and_reserved(self) -> tuple[int, int]:
        page = self.http.get(f"{self.products}/api/v1/owner/products", headers=self.owner).json()
        [mine] = [p for p in page["items"] if p["id"] == self.product["id"]]
        return int(mine["stock"]), int(mine["reserved"])

    @property
    def products(self) -> str:
        return self.release.service_url("product-service", 18200)

    def phase(self, checkout: str) -> str | None:
        return self.release.checkout(checkout).get("status", {}).get("phase")  # type: ignore[no-any-return]

    def wait_for(self, checkout: str, phase: str, within: float = 120) -> None:
        eventually_sync(
            lambda: self.phase(checkout) == phase,
            within=within,
            interval=0.5,
            failure=lambda: f"{checkout} is {self.phase(checkout)}, not {phase}",
        )

    def wait_for_stock(self, expected: tuple[int, int]) -> None:
        eventually_sync(
            lambda: self.stock_and_reserved() == expected,
            within=60,
            interval=0.5,
            failure=lambda: f"stock and reserved {self.stock_and_reserved()}, not {expected}",
        )

    def converged(self, paid: set[str], unpaid: set[str]) -> None:
        """Each paid checkout Settled with the money taken, each unpaid one Expired with
        no money taken, and the stock sold for the paid ones only, nothing held."""
        wanted = dict.fromkeys(paid, "Settled") | dict.fromkeys(unpaid, "Expired")

        def phases() -> dict[str, str | None]:
            return {c: self.phase(c) for c in wanted}

        def wrong() -> str:
            return str({c: p for c, p in phases().items() if p != wanted[c]})

        eventually_sync(lambda: phases() == wanted, within=240, interval=1, failure=wrong)
        # Money taken on a page the buyer never saw goes back (refunded) in time.
        owed = {c: PRICE if c in paid else 0 for c in wanted}
        eventually_sync(
            lambda: {c: self.kept(c) for c in wanted} == owed,
            within=120,
            interval=1,
            failure=lambda: str({c: k for c in wanted if (k := self.kept(c)) != owed[c]}),
        )


def account(http: httpx.Client, release: Release) -> dict[str, str]:
    """A new user of the in-cluster User service, logged in."""
    users = release.service_url("user-service", 18100)
    name = f"u{uuid.uuid4().hex[:10]}"
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    made = http.post(f"{users}/api/v1/users", json=body)
    assert made.status_code == 201, made.text
    login = http.post(f"{users}/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check
