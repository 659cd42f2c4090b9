"""The chart on the real node, as a user installs it: the image from the Dockerfile
(scripts/build-image --load), `helm install --wait` with external Postgres, Redis and
NATS on the host and the Midtrans sandbox in the cluster; then the shop's flows
through the NodePorts, each component with its own ServiceAccount, the operator's
pod deleted amid 20 sagas, `helm upgrade` to a new image tag with checkouts in
flight, and `helm uninstall`.

The release gets its own database on the host's Postgres, its own Redis database
and its own NATS server on the host: the host's own NATS serves the processes of
`scripts/up`, whose operator and Product service share the durable consumers'
names with the release's and would take its events.

The tests run in file order on one release; the last one uninstalls it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from saga_devenv import node, servers
from saga_devenv.process import free_port, port_open
from saga_kit.checkout_resource import API_VERSION, PLURAL
from saga_kit.events import Topology
from saga_kit.nats_access import Role, authorization
from tests.helpers.waiting import eventually_sync
from tests.integration.test_chart import APP_COMPONENTS as COMPONENTS
from tests.node.chart_release import (
    API_NODE_PORT,
    CHART,
    LISTENER_NODE_PORT,
    ROOT,
    Release,
    Shop,
    account,
    answers,
    helm,
    helm_wait,
)
from tests.node.conftest import Cluster

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

# Who talks to the apiserver, as whom; the others get no token at all.
ACCOUNTS = {c: c for c in ("operator", "expiry-worker", "api", "listener")}


def timed(what: str, started: float) -> None:
    print(f"[chart-on-node] {what}: {time.monotonic() - started:.1f} s")


def build_image(tag: str | None = None) -> str:
    """scripts/build-image --load: the image's name, loaded into the node's containerd."""
    started = time.monotonic()
    argv = [str(ROOT / "scripts" / "build-image"), "--load", *(["--tag", tag] if tag else [])]
    built = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr
    timed(" ".join(["scripts/build-image", *argv[1:]]), started)
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image(cluster: Cluster) -> str:
    return build_image()


@dataclass(frozen=True)
class Nats:
    url: str
    passwords: dict[str, str]


@pytest.fixture(scope="module")
def nats(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    """A NATS JetStream server of the release's own on the node's address."""
    work = tmp_path_factory.mktemp("nats")
    passwords = {role.value: uuid.uuid4().hex for role in Role}
    config = work / "nats.conf"
    config.write_text(json.dumps({"authorization": authorization(passwords, [Topology()])}))
    port = free_port(cluster.node_ip)
    argv = [str(cluster.cfg.binary("nats-server")), "--config", str(config)]
    argv += ["--addr", cluster.node_ip, "--port", str(port), "--jetstream"]
    log = (work / "nats.log").open("w")
    server = subprocess.Popen([*argv, "--store_dir", str(work / "data")], stdout=log, stderr=log)
    try:
        eventually_sync(
            lambda: port_open(port, cluster.node_ip), within=30, failure="the release's NATS"
        )
        yield Nats(f"nats://{cluster.node_ip}:{port}", passwords)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def database(cluster: Cluster) -> Iterator[str]:
    """A database of the release's own on the host's Postgres."""
    name = f"chart_{uuid.uuid4().hex[:8]}"
    _postgres(cluster, f"CREATE DATABASE {name}")
    yield name
    _postgres(cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _postgres(cluster: Cluster, statement: str, database: str = "postgres") -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(servers.postgres_dsn(cluster.cfg, database))
        try:
            return await connection.fetch(statement)  # type: ignore[no-any-return]
        finally:
            await connection.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def release(cluster: Cluster, image: str, nats: Nats, database: str) -> Iterator[Release]:
    name = "shop"
    namespace = f"node-chart-{uuid.uuid4().hex[:8]}"
    urls = servers.pod_urls(cluster.cfg, cluster.node_ip)
    postgres = urls.postgres.rsplit("/", 1)[0] + f"/{database}"
    redis = urls.redis.rsplit("/", 1)[0] + "/7"  # the host's processes use database 0
    cluster.kubectl("create", "namespace", namespace)
    cluster.wait(namespace, "create", "serviceaccount/default", seconds=30)
    nats_secret = f"{name}-nats"
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        nats_secret,
        *(f"--from-literal={user}={password}" for user, password in nats.passwords.items()),
        namespace=namespace,
    )
    repository, tag = image.rsplit(":", 1)
    try:
        started = time.monotonic()
        helm_wait(
            cluster,
            namespace,
            "install",
            name,
            str(CHART),
            f"--set-string=image.repository={repository},image.tag={tag},image.pullPolicy=Never",
            f"--set-string=external.postgres.url={postgres}",
            f"--set-string=external.redisUrl={redis},external.natsUrl={nats.url}",
            f"--set-string=nats.existingSecret={nats_secret}",
            # The sandbox keeps its orders on an emptyDir, which a new pod does not get:
            # pinned, it keeps them while the upgrade test rolls everything else.
            f"--set=midtrans.sandbox.enabled=true,midtrans.sandbox.imageTag={tag}",
            f"--set=api.nodePort={API_NODE_PORT},listener.nodePort={LISTENER_NODE_PORT}",
            # Payments notified while the listener rolls are found by the poller.
            "--set=operator.pollIntervalSeconds=5",
        )
        timed("helm install --wait", started)
        installed = Release(cluster, name, namespace)
        _wait_for_the_doors(installed)
        yield installed
    finally:
        helm(cluster, "uninstall", name, f"--namespace={namespace}", "--wait")
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        # Its pods hold connections to the database until they have stopped.
        cluster.wait("", "delete", f"namespace/{namespace}", seconds=120)


def _wait_for_the_doors(release: Release) -> None:
    """Until each Service the tests use answers from the host: kube-proxy refuses a
    Service's connections until it has seen its endpoints, shortly after they are Ready."""
    doors = [
        f"{release.service_url('user-service', 18100)}/readyz",
        f"{release.service_url('product-service', 18200)}/readyz",
        f"{release.sandbox}/_sandbox/health",
        f"{release.api}/readyz",
        f"{release.listener}/readyz",
    ]
    for url in doors:
        eventually_sync(answers(url), within=60, interval=0.2, failure=f"no answer at {url}")


def _state(cluster: Cluster, namespace: str) -> str:
    """What a failed install left: pods and the recent events, for the failure message."""
    pods = cluster.kubectl("get", "pods", "-o", "wide", namespace=namespace)
    events = cluster.kubectl("get", "events", "--sort-by=.lastTimestamp", namespace=namespace)
    return f"\n{pods}\n{events[-4000:]}"


@pytest.fixture
def shop(release: Release) -> Iterator[Shop]:
    with httpx.Client(timeout=30) as http:
        yield Shop.open(release, http, stock=5)


def test_every_workload_is_ready_with_its_own_service_account(release: Release) -> None:
    deployments = release.cluster.get(release.namespace, "deployments")["items"]
    ready = {
        d["metadata"]["name"].removeprefix(release.prefix): d["status"].get("readyReplicas", 0)
        for d in deployments
    }
    assert ready == dict.fromkeys(COMPONENTS, 1)
    for component in COMPONENTS:
        [pod] = release.pods(component)
        spec = pod["spec"]
        if component in ACCOUNTS:
            assert spec["serviceAccountName"] == release.prefix + ACCOUNTS[component], component
            mounted = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]]
            assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounted, component
        else:
            assert spec["automountServiceAccountToken"] is False, component


def test_a_checkout_paid_at_the_sandbox_settles_and_sells_the_stock(shop: Shop) -> None:
    buyer = account(shop.http, shop.release)
    reply = shop.checkout(buyer, 2)
    assert reply.status_code == 201, reply.text
    created = reply.json()
    assert created["phase"] == "AwaitingPayment" and created["snap_token"], created
    assert shop.stock_and_reserved() == (5, 2)
    shop.pay(created["id"])
    shop.wait_for(created["id"], "Settled")
    got = shop.release.checkout(created["id"])
    assert got["status"]["payment"]["transactionStatus"] == "settlement", got["status"]
    shop.wait_for_stock((3, 0))


def test_an_unpaid_checkout_expires_and_the_stock_comes_back(shop: Shop) -> None:
    reply = shop.checkout(account(shop.http, shop.release), 3, ttl=2)
    assert reply.status_code == 201, reply.text
    assert shop.stock_and_reserved() == (5, 3)
    cid = reply.json()["id"]
    shop.wait_for(cid, "Expired")
    shop.wait_for_stock((5, 0))


def test_a_repeated_post_with_its_idempotency_key_is_the_same_checkout(shop: Shop) -> None:
    buyer, key = account(shop.http, shop.release), uuid.uuid4().hex
    first, again = shop.checkout(buyer, 2, key=key), shop.checkout(buyer, 2, key=key)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["id"] == again.json()["id"]
    assert shop.stock_and_reserved() == (5, 2)


def test_a_forged_webhook_is_refused_at_the_listener_nodeport(release: Release) -> None:
    forged = {
        "order_id": f"co-{uuid.uuid4().hex[:8]}",
        "status_code": "200",
        "gross_amount": "25000.00",
        "signature_key": "0" * 128,
        "transaction_status": "settlement",
        "transaction_id": str(uuid.uuid4()),
        "fraud_status": "accept",
        "payment_type": "bank_transfer",
        "transaction_time": "2026-01-01 10:00:00",
        "currency": "IDR",
    }
    refused = httpx.post(f"{release.listener}/midtrans/notifications", json=forged, timeout=30)
    assert refused.status_code == 401, refused.text


# PATCH a Checkout's status from inside a pod, with the pod's own token: the status code.
PATCH_STATUS_FROM_THE_POD = """
import ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
request = urllib.request.Request(
    "https://kubernetes.default.svc/apis/{api_version}/namespaces/{namespace}/{plural}/{name}/status",
    data=b"{{}}", method="PATCH",
    headers={{"Authorization": "Bearer " + open(sa + "token").read(),
             "Content-Type": "application/merge-patch+json"}})
context = ssl.create_default_context(cafile=sa + "ca.crt")
try:
    print(urllib.request.urlopen(request, context=context).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


def test_each_account_may_do_what_its_component_does_and_no_more(shop: Shop) -> None:
    """The flows above prove each role sufficient; here a verb outside a role is refused,
    for real from the API's pod (its token may create Checkouts, never write a status)."""
    release = shop.release
    reply = shop.checkout(account(shop.http, release), 1, ttl=5)
    assert reply.status_code == 201, reply.text
    checkout = reply.json()["id"]
    # The operator would expire it too (whoever comes first): without the operator,
    # the worker's job alone expires it, with the worker's own token.
    operator = f"deployment/{release.prefix}operator"
    release.cluster.kubectl("scale", operator, "--replicas=0", namespace=release.namespace)
    try:
        eventually_sync(lambda: not release.pods("operator"), within=60, failure="operator left")
        shop.wait_for(checkout, "Expired")
    finally:
        release.cluster.kubectl("scale", operator, "--replicas=1", namespace=release.namespace)
    written = release.cluster.get(release.namespace, "checkout", checkout, "--show-managed-fields")
    managers = {m["manager"] for m in written["metadata"]["managedFields"]}
    assert "checkout-expiry-worker" in managers, managers
    release.cluster.wait(release.namespace, "condition=Available", operator, seconds=120)
    shop.wait_for_stock((5, 0))

    code = PATCH_STATUS_FROM_THE_POD.format(
        api_version=API_VERSION, namespace=release.namespace, plural=PLURAL, name=checkout
    )
    assert release.exec_python("api", code).strip() == "403"
    assert release.exec_python("listener", code).strip() == "200"  # an empty patch, allowed

    def may(component: str, verb: str, *resource: str) -> str:
        account_name = f"system:serviceaccount:{release.namespace}:{release.prefix}{component}"
        argv = ["auth", "can-i", verb, *resource, f"--as={account_name}"]
        result = subprocess.run(
            [*node.kubectl(release.cluster.cfg), f"--namespace={release.namespace}", *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        return result.stdout.strip()

    checkouts, status = "checkouts.checkout.saga.dev", "--subresource=status"
    for component, verb, resource, allowed in [
        ("listener", "get", (checkouts,), "yes"),
        ("listener", "watch", (checkouts,), "yes"),
        ("listener", "patch", (checkouts, status), "yes"),
        ("listener", "patch", (checkouts,), "no"),
        ("listener", "delete", (checkouts,), "no"),
        ("listener", "create", (checkouts,), "no"),
        ("listener", "get", ("secrets",), "no"),
        ("expiry-worker", "get", (checkouts,), "yes"),
        ("expiry-worker", "patch", (checkouts, status), "yes"),
        ("expiry-worker", "create", ("events",), "yes"),
        ("expiry-worker", "list", (checkouts,), "no"),
        ("expiry-worker", "delete", (checkouts,), "no"),
        ("expiry-worker", "update", ("leases.coordination.k8s.io",), "no"),
        ("api", "create", (checkouts,), "yes"),
        ("api", "patch", (checkouts, status), "no"),
        ("operator", "delete", (checkouts,), "yes"),
        ("operator", "update", (checkouts,), "no"),
    ]:
        assert may(component, verb, *resource) == allowed, (component, verb, resource)


def _pay_and_leave(shop: Shop, checkouts: list[str], paid: set[str]) -> None:
    """Pays ``paid`` (each once its Snap order exists), leaves the others to expire."""
    for checkout in checkouts:
        if checkout in paid:
            shop.pay(checkout)


def test_the_operator_deleted_amid_20_sagas_leaves_each_finished_right(release: Release) -> None:
    with httpx.Client(timeout=60) as http:
        shop = Shop.open(release, http, stock=40)
        # The API allows 5 open checkouts per user: 5 buyers, 4 checkouts each.
        buyers = [account(http, release) for _ in range(5)]
        [old] = release.pods("operator")
        with ThreadPoolExecutor(max_workers=20) as pool:
            # Even ones are paid (a long TTL), odd ones expire soon.
            posts = [
                pool.submit(shop.checkout_surely, buyers[i % 5], 300 if i % 2 == 0 else 15)
                for i in range(20)
            ]
            # In the middle: some sagas have their Snap token, the rest are starting.
            eventually_sync(
                lambda: sum(p.done() for p in posts) >= 5, within=120, failure="5 POSTs"
            )
            doomed = old["metadata"]["name"]
            release.cluster.kubectl(
                "delete", "pod", doomed, "--wait=false", namespace=release.namespace
            )
            checkouts = [p.result() for p in posts]
        paid = set(checkouts[::2])
        _pay_and_leave(shop, checkouts, paid)
        shop.converged(paid, set(checkouts) - paid)
        shop.wait_for_stock((40 - len(paid), 0))
        [new] = release.pods("operator")
        assert new["metadata"]["uid"] != old["metadata"]["uid"]


def test_helm_upgrade_to_a_new_image_tag_loses_no_checkout_in_flight(
    release: Release, image: str
) -> None:
    repository, tag = image.rsplit(":", 1)
    new_tag = f"{tag}-next"
    subprocess.run(["podman", "tag", image, f"{repository}:{new_tag}"], check=True, timeout=60)
    assert build_image(new_tag) == f"{repository}:{new_tag}"  # the same image, loaded again
    with httpx.Client(timeout=60) as http:
        shop = Shop.open(release, http, stock=30)
        buyers = [account(http, release) for _ in range(3)]
        # The first three of each batch are paid (a long TTL), the others expire soon.
        ttls = [300, 300, 300, 30, 30, 30]
        before = [shop.checkout_surely(buyers[i % 3], ttl) for i, ttl in enumerate(ttls)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=1) as pool:
            upgrade = pool.submit(
                helm_wait,
                release.cluster,
                release.namespace,
                "upgrade",
                release.name,
                str(CHART),
                "--reuse-values",
                f"--set-string=image.tag={new_tag}",
            )
            # While it rolls: pay half of those made before, and make more.
            _pay_and_leave(shop, before, set(before[:3]))
            during = [shop.checkout_surely(buyers[i % 3], ttl) for i, ttl in enumerate(ttls)]
            upgrade.result()
        timed("helm upgrade --wait, with checkouts", started)
        _pay_and_leave(shop, during, set(during[:3]))
        paid = set(before[:3]) | set(during[:3])
        shop.converged(paid, set(before + during) - paid)
        shop.wait_for_stock((30 - len(paid), 0))
    for component in COMPONENTS:
        [pod] = release.pods(component)
        expected = tag if component == "midtrans-sandbox" else new_tag
        assert pod["spec"]["containers"][0]["image"] == f"{repository}:{expected}", component


def test_helm_uninstall_leaves_what_the_chart_readme_says(release: Release, database: str) -> None:
    cluster, namespace = release.cluster, release.namespace
    checkouts = release.phases()
    assert len(checkouts) >= 36, checkouts  # made by the tests above, a few still open
    done = helm(cluster, "uninstall", release.name, f"--namespace={namespace}", "--wait")
    assert done.returncode == 0, done.stderr
    instance = f"app.kubernetes.io/instance={release.name}"
    kinds = "deployments,replicasets,pods,services,secrets,serviceaccounts,roles,rolebindings"

    def gone() -> bool:
        left = cluster.get(namespace, kinds, "-l", instance)["items"]
        cluster_wide = cluster.get("", "clusterroles,clusterrolebindings", "-l", instance)
        return not left and not [
            r for r in cluster_wide["items"] if r["metadata"]["name"].startswith(namespace)
        ]

    eventually_sync(gone, within=120, interval=0.5, failure="chart objects left after uninstall")
    # Left, as the README says: the CRD, the Checkouts (the record of each sale), the
    # operator's Lease (made at run time), the Secret the user made, and the data in
    # the user's own servers.
    cluster.get("", "crd", f"{PLURAL}.checkout.saga.dev")
    assert release.phases() == checkouts
    cluster.get(namespace, "lease", f"{release.prefix}operator")
    cluster.get(namespace, "secret", f"{release.name}-nats")
    journal = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'checkouts'"
    assert _postgres(cluster, journal, database)[0][0] > 0
