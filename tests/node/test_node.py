"""The local node runs workloads as a cluster does (saga-devenv up --node).

Each test drives the node through the apiserver only, with images made locally,
and checks what a user of the cluster would see: a Pod Ready, a Deployment at its
new size, a deleted namespace gone, a Service name answered by CoreDNS from
inside a pod, a NodePort answering on the host.
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest

from tests.helpers.waiting import eventually_sync
from tests.node.conftest import Cluster
from tests.node.workloads import container, deployment, pod, server, service

pytestmark = pytest.mark.node


def _ready_pods(cluster: Cluster, namespace: str, app: str) -> list[str]:
    pods = cluster.get(namespace, "pods", "-l", f"app={app}")["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]


def test_a_pod_from_a_local_image_becomes_ready_and_answers(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(namespace, pod("web", server(cluster.image)))
    cluster.wait(namespace, "condition=Ready", "pod/web")
    # exec and logs go through the apiserver to the kubelet (its client certificate).
    answer = cluster.kubectl(
        "exec", "web", "--", "/nodebox", "get", "http://localhost:8080/", namespace=namespace
    )
    assert answer == "hello from web\n"
    assert cluster.kubectl("logs", "web", namespace=namespace) == "nodebox serving on :8080\n"
    ip = cluster.get(namespace, "pod", "web")["status"]["podIP"]
    assert ip.startswith("10.244.0.")


def test_a_deployment_scales_up_and_down(cluster: Cluster, namespace: str) -> None:
    cluster.apply(namespace, deployment("web", cluster.image, replicas=1))
    cluster.wait(namespace, "condition=Available", "deployment/web")
    cluster.kubectl("scale", "deployment/web", "--replicas=3", namespace=namespace)
    eventually_sync(
        lambda: len(_ready_pods(cluster, namespace, "web")) == 3,
        within=60,
        failure="3 ready pods after scaling to 3",
    )
    cluster.kubectl("scale", "deployment/web", "--replicas=1", namespace=namespace)
    eventually_sync(
        lambda: len(cluster.get(namespace, "pods", "-l", "app=web")["items"]) == 1,
        within=60,
        failure="the ReplicaSet did not remove the 2 extra pods",
    )


def test_a_deleted_namespace_is_emptied_and_goes(cluster: Cluster) -> None:
    name = f"node-test-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait(name, "create", "serviceaccount/default", seconds=30)
    cluster.apply(
        name,
        pod("web", server(cluster.image)),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "left"}},
    )
    cluster.wait(name, "condition=Ready", "pod/web")
    cluster.kubectl("delete", "namespace", name, "--wait=false")
    cluster.wait("", "delete", f"namespace/{name}", seconds=90)


def test_a_service_name_resolves_through_coredns_inside_a_pod(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(
        namespace,
        deployment("web", cluster.image),
        service("web"),
        pod("client", container(cluster.image, "pause")),
    )
    cluster.wait(namespace, "condition=Available", "deployment/web")
    cluster.wait(namespace, "condition=Ready", "pod/client")
    cluster_ip = cluster.get(namespace, "service", "web")["spec"]["clusterIP"]

    def inside(*args: str) -> str:
        return cluster.kubectl("exec", "client", "--", "/nodebox", *args, namespace=namespace)

    assert inside("resolve", "web").split() == [cluster_ip]  # the pod's search path
    assert inside("resolve", f"web.{namespace}.svc.cluster.local").split() == [cluster_ip]

    def answers() -> bool:  # once kube-proxy has the new endpoint (it rejects until then)
        try:
            return inside("get", "http://web/").startswith("hello from web-")
        except AssertionError:
            return False

    eventually_sync(answers, within=30, failure="no answer from http://web/ inside the pod")


def test_a_nodeport_answers_on_the_host(cluster: Cluster, namespace: str) -> None:
    cluster.apply(namespace, deployment("web", cluster.image), service("web", "NodePort"))
    cluster.wait(namespace, "condition=Available", "deployment/web")
    port = cluster.get(namespace, "service", "web")["spec"]["ports"][0]["nodePort"]
    for host in (cluster.node_ip, "127.0.0.1"):
        url = f"http://{host}:{port}/"

        def answers(url: str = url) -> bool:
            return _answer(url).startswith("hello from web-")

        eventually_sync(answers, within=30, failure=f"no answer at {url}")


def _answer(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return str(response.read().decode())
    except OSError:
        return ""


def test_a_pod_reaches_the_apiserver_as_its_service_account(
    cluster: Cluster, namespace: str
) -> None:
    """In-cluster access as the components will have it: the `kubernetes` Service,
    the mounted token and CA, and RBAC deciding (refused, then allowed by a role)."""
    cluster.apply(namespace, pod("client", container(cluster.image, "pause")))
    cluster.wait(namespace, "condition=Ready", "pod/client")
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    def status() -> str:
        reply = cluster.kubectl(
            "exec", "client", "--", "/nodebox", "api", path, namespace=namespace
        )
        return reply.split("\n", 1)[0]

    assert status() == "403"
    cluster.kubectl(
        "create",
        "rolebinding",
        "view",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:default",
        namespace=namespace,
    )
    eventually_sync(
        lambda: status() == "200",
        within=30,
        failure="the view role did not let the service account list configmaps",
    )
