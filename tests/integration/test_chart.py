"""The Helm chart lints, renders manifests the real apiserver accepts, and installs.

No Pod runs on the bare apiserver, so what is proven here is what can be proven
without a node: names and selectors, the values schema, secrets kept across
upgrades, probes, resources, security contexts, and that each workload's
environment is exactly what its module's configuration reads (run on it).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import yaml

from checkout_operator.worker import HEALTH_PORT
from saga_kit.access_tokens import load_signing_keys, new_private_key_pem
from saga_kit.events import Topology
from saga_kit.nats_access import Role, chart_permissions, permissions
from tests.conftest import Platform
from tests.helpers.processes import free_port, python_module
from tests.integration.saga_fixtures import SANDBOX_KEY, SagaEnv

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "checkout-saga"
DEV = f"--values={CHART / 'values-dev.yaml'}"
# What a production install must give (no dev servers, no sandbox).
PRODUCTION = (
    "--set=external.postgres.url=postgresql://shop:pw@db.example:5432/shop,"
    "external.redisUrl=redis://redis.example:6379/0,external.natsUrl=nats://nats.example:4222,"
    "secrets.midtransServerKey=Mid-server-real,nats.existingSecret=shop-nats"
)
NO_NODE_PORTS = "--set=api.nodePort=0,listener.nodePort=0"  # NodePorts are cluster-wide
APP_COMPONENTS = (
    "operator",
    "expiry-worker",
    "user-service",
    "product-service",
    "api",
    "listener",
    "midtrans-sandbox",
)
DEV_SERVERS = ("postgres", "redis", "nats")
NATS_USER_OF = {
    "operator": Role.OPERATOR.value,
    "expiry-worker": Role.EXPIRY_WORKER.value,
    "product-service": Role.PRODUCT_SERVICE.value,
    "listener": Role.PAYMENT_LISTENER.value,
}
# Keys of the chart's Secret each component may read (docs: the chart's README).
SECRET_KEYS_OF = {
    "operator": {"database-url", "service-tokens", "midtrans-server-key"},
    "expiry-worker": {"database-url", "service-tokens", "midtrans-server-key"},
    "user-service": {"database-url", "signing-keys", "service-tokens"},
    "product-service": {"database-url", "service-tokens"},
    "api": {"database-url", "service-tokens"},
    "listener": {"midtrans-server-key"},
    "midtrans-sandbox": {"midtrans-server-key"},
}
# How each module reads its configuration (what `python -m <module>` does at start).
CONFIG_LOADERS = {
    "operator": "from checkout_operator.settings import OperatorSettings as S; "
    "from midtrans.config import MidtransConfig as M; S.from_env(); M.from_env()",
    "expiry-worker": "from checkout_operator import worker as w; "
    "from checkout_operator.settings import OperatorSettings as S; "
    "from midtrans.config import MidtransConfig as M; S.from_env(); M.from_env(); "
    "w._health_port()",
    "user-service": "from user_service.config import UserServiceConfig as C; C.from_env()",
    "product-service": "from product_service.config import ProductServiceConfig as C; "
    "C.from_env(); from saga_kit.settings import env_float; "
    "env_float('USER_AUTH_CACHE_SECONDS', 5.0)",
    "api": "from checkout_api.config import CheckoutApiConfig as C; C.from_env()",
    "listener": "from payment_listener.config import ListenerConfig as C; C.from_env()",
    "midtrans-sandbox": "from midtrans_sandbox.settings import SandboxSettings as C; C.from_env()",
}
# Runs a loader with os.environ replaced by a mapping that notes each name read.
RECORDING_ENV = """
import json, os, sys
class Recording(dict):
    read = set()
    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)
    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)
    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)
os.environ = Recording(os.environ)
exec(sys.argv[1])
print(json.dumps(sorted(Recording.read)))
"""


def helm(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(platform.cfg.binary("helm")), f"--kubeconfig={platform.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"HOME": str(platform.cfg.run_dir / "helm-home"), "PATH": "/usr/bin:/bin"},
    )


def template(
    platform: Platform, *args: str, release: str = "cs"
) -> subprocess.CompletedProcess[str]:
    return helm(
        platform,
        "template",
        release,
        str(CHART),
        f"--kube-version={platform.cfg.kube_version}",
        *args,
    )


def render(platform: Platform, *args: str, release: str = "cs") -> list[dict[str, Any]]:
    rendered = template(platform, *args, release=release)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def by_component(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The Deployments, by their app.kubernetes.io/component label."""
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in of_kind(docs, "Deployment").values()
    }


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_values(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(deployment).get("env", []) if "value" in e}


def secret_refs(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each variable taken from a Secret: (Secret, key)."""
    return {
        e["name"]: (ref["name"], ref["key"])
        for e in container(deployment).get("env", [])
        if (ref := (e.get("valueFrom") or {}).get("secretKeyRef"))
    }


def nats_env(deployment: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
    """A Deployment's NATS_USER and every (Secret, key) its NATS_PASSWORD may come from."""
    refs = secret_refs(deployment)
    return env_values(deployment).get("NATS_USER"), [r for r in refs.values() if "nats" in r[0]]


def checksums(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {
        name: json.dumps(d["spec"]["template"]["metadata"].get("annotations", {}), sort_keys=True)
        for name, d in by_component(docs).items()
    }


def secret_data(platform: Platform, namespace: str, name: str) -> dict[str, str]:
    raw = platform.kubectl("get", "secret", name, "-o", "json", namespace=namespace).stdout
    return {k: base64.b64decode(v).decode() for k, v in json.loads(raw)["data"].items()}


def test_chart_crd_is_the_repository_crd() -> None:
    assert (CHART / "crds" / "checkout.yaml").read_text() == (
        REPO / "crds" / "checkout.yaml"
    ).read_text()


def test_chart_passes_the_notification_url_to_the_operator(platform: Platform) -> None:
    def operator_env(*args: str) -> dict[str, str]:
        return env_values(by_component(render(platform, DEV, *args))["operator"])

    url = "https://shop.example/midtrans/notifications"
    assert operator_env(f"--set=midtrans.notificationUrl={url}")["MIDTRANS_NOTIFICATION_URL"] == url
    assert "MIDTRANS_NOTIFICATION_URL" not in operator_env()


def test_chart_passes_the_admission_settings_to_the_api(platform: Platform) -> None:
    def api_env(*args: str) -> dict[str, str]:
        return env_values(by_component(render(platform, DEV, *args))["api"])

    assert {k: v for k, v in api_env().items() if "FLIGHT" in k or "ADMIT" in k} == {
        "CHECKOUT_API_MAX_IN_FLIGHT": "32",
        "CHECKOUT_API_MIN_IN_FLIGHT": "8",
        "CHECKOUT_API_ADMIT_TARGET_SECONDS": "0.5",
    }
    fixed = api_env("--set=api.admission.targetSeconds=0,api.admission.maxInFlight=64")
    assert fixed["CHECKOUT_API_ADMIT_TARGET_SECONDS"] == "0"
    assert fixed["CHECKOUT_API_MAX_IN_FLIGHT"] == "64"


def test_chart_nats_permissions_are_saga_kits() -> None:
    """The chart's NATS users are rendered from the same table as the local server's."""
    assert (CHART / "files" / "nats-permissions.json").read_text() == chart_permissions()


def test_chart_nats_users_and_each_workload_only_its_own_password(platform: Platform) -> None:
    docs = render(platform, DEV)
    secrets = of_kind(docs, "Secret")
    passwords = secrets["cs-checkout-saga-nats-users"]["stringData"]
    config = json.loads(secrets["cs-checkout-saga-nats-config"]["stringData"]["nats.conf"])
    users = {u["user"]: u for u in config["authorization"]["users"]}
    assert set(users) == set(passwords) == {role.value for role in Role}
    for role in Role:
        assert users[role.value]["permissions"] == permissions(role, [Topology()])
        assert users[role.value]["password"] == passwords[role.value]
    deployments = by_component(docs)
    assert container(deployments["nats"])["args"] == ["--config", "/etc/nats/nats.conf"]
    for component in APP_COMPONENTS:
        user, refs = nats_env(deployments[component])
        if component in NATS_USER_OF:
            expected = NATS_USER_OF[component]
            assert user == expected and refs == [("cs-checkout-saga-nats-users", expected)]
        else:
            assert user is None and refs == [], component  # no NATS at all

    # An external NATS: the users' passwords come from the Secret named in the values.
    docs = render(platform, PRODUCTION)
    assert not [d for d in of_kind(docs, "Secret") if "nats" in d]
    listener = by_component(docs)["listener"]
    assert nats_env(listener) == ("payment-listener", [("shop-nats", "payment-listener")])
    refused = template(platform, DEV, "--set=nats.existingSecret=x")
    assert refused.returncode != 0 and "external NATS" in refused.stderr


def test_names_follow_the_release_and_every_reference_stays_inside_it(platform: Platform) -> None:
    """Every object and every in-chart reference (Service hosts, Secrets, accounts,
    the sandbox and NATS URLs) carries the release's prefix."""
    for release, prefix, extra in [
        ("shop", "shop-checkout-saga-", ()),
        ("checkout-saga", "checkout-saga-", ()),  # the release already names the chart
        ("shop", "tienda-", ("--set=fullnameOverride=tienda",)),
        ("shop", "shop-cs-", ("--set=nameOverride=cs",)),
    ]:
        docs = render(platform, DEV, *extra, release=release)
        namespaced = [d for d in docs if not d["kind"].startswith("Cluster")]
        outside = [
            d["metadata"]["name"]
            for d in namespaced
            if not (d["metadata"]["name"] + "-").startswith(prefix)
        ]
        assert outside == [], prefix
        services = set(of_kind(docs, "Service"))
        secrets = set(of_kind(docs, "Secret"))
        accounts = set(of_kind(docs, "ServiceAccount"))
        for name, deployment in of_kind(docs, "Deployment").items():
            pod = deployment["spec"]["template"]["spec"]
            if "serviceAccountName" in pod:
                assert pod["serviceAccountName"] in accounts, name
            for secret, _ in secret_refs(deployment).values():
                assert secret in secrets, (name, secret)
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in secrets, name
            # Every host a workload is pointed at is one of this release's Services.
            targets = {
                v
                for k, v in env_values(deployment).items()
                if k.endswith(("_URL", "_SERVICE")) and "example" not in v
            }
            for target in targets:
                host = target.split("//")[-1].split("/")[0].split(":")[0]
                assert host in services, (name, target)
        # The sandbox notifies this release's listener; the saga talks to this sandbox.
        sandbox = env_values(by_component(docs)["midtrans-sandbox"])
        assert sandbox["MIDTRANS_SANDBOX_NOTIFICATION_URL"].startswith(f"http://{prefix}listener:")
        operator = env_values(by_component(docs)["operator"])
        assert operator["MIDTRANS_SNAP_URL"] == f"http://{prefix}midtrans-sandbox:18900"
        assert operator["CHECKOUT_LEASE_NAME"] == f"{prefix}operator"

    # One release name in two namespaces: cluster-scoped objects differ too.
    def cluster_names(namespace: str) -> set[str]:
        docs = render(platform, DEV, f"--namespace={namespace}")
        return {d["metadata"]["name"] for d in docs if d["kind"].startswith("Cluster")}

    assert cluster_names("shop-a") and not cluster_names("shop-a") & cluster_names("shop-b")

    too_long = template(platform, DEV, release="a-very-long-release-name-for-a-shop-in-jakarta")
    assert too_long.returncode != 0 and "fullnameOverride" in too_long.stderr


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_two_releases_install_side_by_side_in_one_namespace(
    platform: Platform, namespace: str
) -> None:
    releases = ("alpha", "beta")
    try:
        for release in releases:
            install = helm(
                platform,
                "install",
                release,
                str(CHART),
                f"--namespace={namespace}",
                DEV,
                NO_NODE_PORTS,
            )
            assert install.returncode == 0, install.stderr
        listed = json.loads(
            platform.kubectl(
                "get",
                "deployments,services,secrets,serviceaccounts,roles,rolebindings",
                "-o",
                "json",
                namespace=namespace,
            ).stdout
        )["items"]
        names = [
            (o["kind"], o["metadata"]["name"])
            for o in listed
            if not o["metadata"]["name"].startswith("sh.helm.release.")  # Helm's records
            # The namespace's own, made by the controller-manager when a node runs.
            and (o["kind"], o["metadata"]["name"]) != ("ServiceAccount", "default")
            and not (o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kube-root-ca.crt")
        ]
        own = {
            r: {(kind, name.removeprefix(r)) for kind, name in names if name.startswith(f"{r}-")}
            for r in releases
        }
        assert own["alpha"] == own["beta"] and len(own["alpha"]) > 25  # all, each its own
        assert len(own["alpha"]) * 2 == len(names)
        deployments = [o for o in listed if o["kind"] == "Deployment"]
        services = [o for o in listed if o["kind"] == "Service"]
        assert len(deployments) == 2 * (len(APP_COMPONENTS) + len(DEV_SERVERS))
        # Each selector picks its own pods only: disjoint across releases and components.
        templates = {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments
        }
        for d in deployments:
            selector = d["spec"]["selector"]["matchLabels"]
            assert selector["app.kubernetes.io/instance"] in releases
            chosen = [name for name, labels in templates.items() if matches(selector, labels)]
            assert chosen == [d["metadata"]["name"]], (d["metadata"]["name"], chosen)
        for s in services:
            chosen = [
                name for name, labels in templates.items() if matches(s["spec"]["selector"], labels)
            ]
            assert chosen == [s["metadata"]["name"]], (s["metadata"]["name"], chosen)
        # And the releases' generated secrets are their own.
        alpha, beta = (secret_data(platform, namespace, f"{r}-checkout-saga") for r in releases)
        assert alpha["service-tokens"] != beta["service-tokens"]
        assert "@alpha-checkout-saga-postgres:" in alpha["database-url"]
    finally:
        for release in releases:
            helm(platform, "uninstall", release, f"--namespace={namespace}")


def test_values_schema_and_rules_refuse_bad_values_clearly(platform: Platform) -> None:
    for bad, says in [
        ("--set=operator.pollRate=abc", "/operator/pollRate': got string, want number"),
        ("--set=api.nodePort=-1", "/api/nodePort': minimum: got -1, want 0"),
        ("--set=api.admission.minInFlight=0", "/api/admission/minInFlight'"),
        ("--set=listener.nodePort=40000", "/listener/nodePort': maximum"),
        ("--set=operator.pollInterval=5", "additional properties 'pollInterval' not allowed"),
        ("--set=imag.tag=1", "additional properties 'imag' not allowed"),
        ("--set=image.pullPolicy=Sometimes", "/image/pullPolicy'"),
        ("--set=secrets.signingKeys=short", "/secrets/signingKeys'"),
        ("--set=external.redisUrl=http://redis:6379", "/external/redisUrl'"),
        ("--set=limits.maxPaymentTTLSeconds=90000", "/limits/maxPaymentTTLSeconds'"),
        ("--set=operator.resources.requests.memory=lots", "/operator/resources/requests/memory'"),
        ("--set=dev.postgres.runAsUser=0", "/dev/postgres/runAsUser'"),
    ]:
        refused = template(platform, DEV, bad)
        assert refused.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in refused.stderr, bad
        assert says in refused.stderr, (bad, refused.stderr)

    # Rules across values: what a production install must give, each named.
    production = PRODUCTION.removeprefix("--set=").split(",")
    for missing, says in [
        ("external.postgres.url", "set external.postgres.url"),
        ("external.redisUrl", "set external.redisUrl"),
        ("external.natsUrl", "set external.natsUrl"),
        ("secrets.midtransServerKey", "set secrets.midtransServerKey"),
    ]:
        given = ",".join(v for v in production if not v.startswith(f"{missing}="))
        refused = template(platform, f"--set={given}")
        assert refused.returncode != 0 and says in refused.stderr, (missing, refused.stderr)
    assert template(platform, PRODUCTION).returncode == 0
    # Your own Secret stands in for the database URL and the Midtrans key.
    own = "--set=external.redisUrl=redis://r:6379/0,external.natsUrl=nats://n:4222,secrets.existingSecret=mine"
    assert template(platform, own).returncode == 0


def test_chart_lints_strictly(platform: Platform) -> None:
    assert helm(platform, "version", "--short").stdout.startswith(platform.cfg.helm_version)
    for values in ((), (DEV,), (PRODUCTION,)):
        lint = helm(platform, "lint", "--strict", str(CHART), *values)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_every_workload_has_probes_resources_a_locked_down_pod_and_the_chart_image(
    platform: Platform,
) -> None:
    docs = render(platform, DEV)
    deployments = by_component(docs)
    assert set(deployments) == {*APP_COMPONENTS, *DEV_SERVERS}
    for component, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        box = container(deployment)
        assert box["readinessProbe"] and box["livenessProbe"], component
        assert box["resources"]["requests"]["cpu"] and box["resources"]["requests"]["memory"]
        assert box["resources"]["limits"]["memory"], component
        assert pod["securityContext"]["runAsNonRoot"] is True, component
        assert pod["securityContext"]["runAsUser"] > 0, component
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert box["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, component
        mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], component  # writable /tmp only
        if component in APP_COMPONENTS:
            assert box["image"] == "checkout-saga:0.1.0", component  # the chart's appVersion
            assert box["imagePullPolicy"] == "IfNotPresent"
            assert box["readinessProbe"]["httpGet"]["port"] in {
                p["containerPort"] for p in box["ports"]
            }
    # The worker's probe is its own health port (checkout_operator.worker).
    worker = container(deployments["expiry-worker"])
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9090}
    assert env_values(deployments["expiry-worker"])[HEALTH_PORT] == "9090"
    assert "cs-checkout-saga-expiry-worker" not in of_kind(docs, "Service")

    # One image value for every workload of the project; the dev servers' are their own.
    custom = by_component(
        render(
            platform,
            DEV,
            "--set=image.repository=localhost/checkout-saga,image.tag=dev1,image.pullPolicy=Never,"
            "dev.redis.image.repository=localhost/redis,operator.resources.limits.memory=1Gi",
        )
    )
    for component in APP_COMPONENTS:
        assert container(custom[component])["image"] == "localhost/checkout-saga:dev1"
        assert container(custom[component])["imagePullPolicy"] == "Never"
    assert container(custom["redis"])["image"] == "localhost/redis:7"
    assert container(custom["operator"])["resources"]["limits"]["memory"] == "1Gi"
    assert container(custom["api"])["resources"]["limits"]["memory"] == "512Mi"


def test_each_workload_gets_only_the_secrets_its_configuration_reads(platform: Platform) -> None:
    """Each Deployment's environment, run through its module's own configuration
    loader: it loads, every variable given is one the module reads, and the secrets
    are the ones it needs (the internet-facing listener gets no service token and no
    database URL)."""
    docs = render(platform, DEV)
    stored = of_kind(docs, "Secret")
    for component, deployment in by_component(docs).items():
        if component in DEV_SERVERS:
            continue
        refs = secret_refs(deployment)
        env = {
            **env_values(deployment),
            **{name: stored[secret]["stringData"][key] for name, (secret, key) in refs.items()},
        }
        ran = subprocess.run(
            [sys.executable, "-c", RECORDING_ENV, CONFIG_LOADERS[component]],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", **env},
        )
        assert ran.returncode == 0, (component, ran.stderr)
        read = set(json.loads(ran.stdout.splitlines()[-1]))
        assert set(env) <= read, (component, set(env) - read)  # nothing it does not read
        chart_keys = {key for secret, key in refs.values() if secret == "cs-checkout-saga"}
        assert chart_keys == SECRET_KEYS_OF[component], component
    listener = by_component(docs)["listener"]
    assert not {"SERVICE_TOKENS", "CHECKOUT_DATABASE_URL"} & set(secret_refs(listener))
    assert not [v for v in container(listener)["env"] if "DATABASE" in v["name"]]


def test_a_changed_secret_rolls_only_the_pods_that_read_it(
    platform: Platform, namespace: str, tmp_path: Path
) -> None:
    """Each pod template's checksum covers the secrets it reads: an upgrade that
    changes one rolls its readers and nothing else."""
    release = f"roll-{namespace[-8:]}"
    fixed = (
        "--set=secrets.serviceTokens=tok1,"
        "secrets.midtransServerKey=SB-Mid-server-one,dev.postgresPassword=pw1"
    )
    (tmp_path / "key-1").write_text(new_private_key_pem())
    (tmp_path / "key-2").write_text(new_private_key_pem())
    fixed_key = f"--set-file=secrets.signingKeys={tmp_path / 'key-1'}"

    def deploy(verb: str, *change: str) -> dict[str, str]:
        done = helm(
            platform,
            verb,
            release,
            str(CHART),
            f"--namespace={namespace}",
            DEV,
            NO_NODE_PORTS,
            fixed,
            fixed_key,
            *change,
        )
        assert done.returncode == 0, done.stderr
        raw = platform.kubectl("get", "deployments", "-o", "json", namespace=namespace).stdout
        return checksums(json.loads(raw)["items"])

    before = deploy("install")
    try:

        def rolled_by(*change: str) -> set[str]:
            after = deploy("upgrade", *change)
            deploy("upgrade")  # back
            return {component for component in before if before[component] != after[component]}

        assert rolled_by() == set()
        assert rolled_by(f"--set-file=secrets.signingKeys={tmp_path / 'key-2'}") == {"user-service"}
        assert rolled_by("--set=secrets.midtransServerKey=SB-Mid-server-two") == {
            "operator",
            "expiry-worker",
            "listener",
            "midtrans-sandbox",
        }
        assert rolled_by("--set=secrets.serviceTokens=tok2") == {
            "operator",
            "expiry-worker",
            "user-service",
            "product-service",
            "api",
        }
        # The database URL holds the dev Postgres password: its users roll with Postgres.
        assert rolled_by("--set=dev.postgresPassword=pw2") == {
            "postgres",
            "operator",
            "expiry-worker",
            "user-service",
            "product-service",
            "api",
        }
    finally:
        helm(platform, "uninstall", release, f"--namespace={namespace}")


def test_the_midtrans_sandbox_is_off_unless_asked_for(platform: Platform) -> None:
    docs = render(platform, PRODUCTION)
    deployments = by_component(docs)
    assert "midtrans-sandbox" not in deployments
    assert not set(DEV_SERVERS) & set(deployments)
    operator = env_values(deployments["operator"])
    assert operator["MIDTRANS_SNAP_URL"] == "https://app.sandbox.midtrans.com"
    assert operator["MIDTRANS_CORE_URL"] == "https://api.sandbox.midtrans.com"
    assert operator["CHECKOUT_REDIS_URL"] == "redis://redis.example:6379/0"
    (secret,) = of_kind(docs, "Secret").values()
    assert secret["stringData"]["midtrans-server-key"] == "Mid-server-real"
    # Real Midtrans by switching the URLs.
    real = env_values(
        by_component(
            render(
                platform,
                PRODUCTION,
                "--set=midtrans.snapUrl=https://app.midtrans.com,"
                "midtrans.coreUrl=https://api.midtrans.com",
            )
        )["operator"]
    )
    assert real["MIDTRANS_SNAP_URL"] == "https://app.midtrans.com"
    assert real["MIDTRANS_CORE_URL"] == "https://api.midtrans.com"


def test_the_sandbox_keeps_its_orders_on_a_volume_of_its_own(platform: Platform) -> None:
    deployments = by_component(render(platform, DEV))
    sandbox = deployments["midtrans-sandbox"]
    state_file = PurePosixPath(env_values(sandbox)["MIDTRANS_SANDBOX_STATE_FILE"])
    mounts = {m["mountPath"]: m["name"] for m in container(sandbox)["volumeMounts"]}
    volumes = {v["name"]: v for v in sandbox["spec"]["template"]["spec"]["volumes"]}
    # Writable under a read-only root, and not the 64 MiB /tmp.
    assert volumes[mounts[str(state_file.parent)]]["emptyDir"] == {"sizeLimit": "1Gi"}
    for component, deployment in deployments.items():
        if component != "midtrans-sandbox":
            assert "state" not in {
                v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]
            }


def test_chart_installs_keeps_its_generated_secrets_across_upgrade_and_rbac(
    platform: Platform, namespace: str, tmp_path: Path
) -> None:
    release = f"cs-{namespace[-8:]}"
    prefix = f"{release}-checkout-saga"
    secrets = (prefix, f"{prefix}-nats-users", f"{prefix}-nats-config", f"{prefix}-postgres")

    def install(verb: str) -> None:
        done = helm(
            platform, verb, release, str(CHART), f"--namespace={namespace}", DEV, NO_NODE_PORTS
        )
        assert done.returncode == 0, done.stderr

    def pod_annotations() -> dict[str, Any]:
        raw = platform.kubectl("get", "deployments", "-o", "json", namespace=namespace).stdout
        items = json.loads(raw)["items"]
        return {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"].get("annotations")
            for d in items
        }

    install("install")
    try:
        listed = helm(platform, "list", f"--namespace={namespace}", "-o", "json")
        assert '"status":"deployed"' in listed.stdout
        deployments = pod_annotations()
        assert {f"{prefix}-{c}" for c in (*APP_COMPONENTS, *DEV_SERVERS)} == set(deployments)
        # Generated secrets (service tokens, signing key, the sandbox's server key, the
        # dev Postgres and NATS passwords) survive an upgrade, and so no pod rolls.
        before = {name: secret_data(platform, namespace, name) for name in secrets}
        assert set(before[prefix]) == {
            "database-url",
            "service-tokens",
            "signing-keys",
            "midtrans-server-key",
        }
        assert len(load_signing_keys(before[prefix]["signing-keys"])) == 1  # Helm's Ed25519
        assert set(before[f"{prefix}-nats-users"]) == {role.value for role in Role}
        install("upgrade")
        assert {name: secret_data(platform, namespace, name) for name in secrets} == before
        assert pod_annotations() == deployments
        # A value given on upgrade replaces the generated one and rolls its readers.
        signing_keys = new_private_key_pem() + new_private_key_pem()  # a rotation
        (tmp_path / "keys").write_text(signing_keys)
        upgrade = helm(
            platform,
            "upgrade",
            release,
            str(CHART),
            f"--namespace={namespace}",
            DEV,
            NO_NODE_PORTS,
            f"--set-file=secrets.signingKeys={tmp_path / 'keys'}",
        )
        assert upgrade.returncode == 0, upgrade.stderr
        assert secret_data(platform, namespace, prefix)["signing-keys"] == signing_keys
        rolled = {n for n, a in pod_annotations().items() if a != deployments[n]}
        assert rolled == {f"{prefix}-user-service"}

        # The operator's RBAC allows what it does and no more.
        sa = f"system:serviceaccount:{namespace}:{prefix}-operator"
        lease = f"leases.coordination.k8s.io/{prefix}-operator"
        for verb, resource, allowed in [
            ("watch", "checkouts.checkout.saga.dev", "yes"),
            ("patch", "checkouts.checkout.saga.dev --subresource=status", "yes"),
            ("delete", "checkouts.checkout.saga.dev", "yes"),
            ("update", "checkouts.checkout.saga.dev", "no"),
            ("create", "secrets", "no"),
            # Leader election: its own Lease in the release namespace only, never deleted.
            *[(verb, f"{lease} --namespace={namespace}", "yes") for verb in ("get", "update")],
            ("create", f"leases.coordination.k8s.io --namespace={namespace}", "yes"),
            ("update", f"leases.coordination.k8s.io/other --namespace={namespace}", "no"),
            ("delete", f"{lease} --namespace={namespace}", "no"),
            ("update", f"{lease} --namespace=kube-system", "no"),
        ]:
            result = platform.kubectl(
                "auth", "can-i", verb, *resource.split(), f"--as={sa}", check=False
            )
            assert result.stdout.strip() == allowed, (verb, resource, result.stdout)
        # The REST API: create and watch Checkouts (its POSTs wait on one watch), no more.
        api = f"system:serviceaccount:{namespace}:{prefix}-api"
        for verb, resource, allowed in [
            ("create", "checkouts.checkout.saga.dev", "yes"),
            ("watch", "checkouts.checkout.saga.dev", "yes"),
            ("list", "checkouts.checkout.saga.dev", "yes"),
            ("delete", "checkouts.checkout.saga.dev", "no"),
            ("patch", "checkouts.checkout.saga.dev --subresource=status", "no"),
        ]:
            result = platform.kubectl(
                "auth",
                "can-i",
                verb,
                *resource.split(),
                f"--as={api}",
                check=False,
                namespace=namespace,
            )
            assert result.stdout.strip() == allowed, (verb, resource, result.stdout)
    finally:
        helm(platform, "uninstall", release, f"--namespace={namespace}")


def test_rendered_chart_is_valid_for_the_real_apiserver(platform: Platform, namespace: str) -> None:
    rendered = template(platform, DEV, f"--namespace={namespace}")
    assert rendered.returncode == 0, rendered.stderr
    # values-dev.yaml: the NodePorts kind-config.yaml maps to localhost:8080 and :8081.
    assert "nodePort: 30080" in rendered.stdout and "nodePort: 30081" in rendered.stdout
    applied = platform.kubectl(
        "apply", "--dry-run=server", "-f", "-", namespace=namespace, stdin=rendered.stdout
    )
    for component in (*APP_COMPONENTS, *DEV_SERVERS):
        assert f"deployment.apps/cs-checkout-saga-{component} created (server dry run)" in (
            applied.stdout
        )

    production = template(platform, PRODUCTION, f"--namespace={namespace}")
    assert production.returncode == 0, production.stderr
    assert "type: NodePort" not in production.stdout
    applied = platform.kubectl(
        "apply", "--dry-run=server", "-f", "-", namespace=namespace, stdin=production.stdout
    )
    assert "deployment.apps/cs-checkout-saga-operator created (server dry run)" in applied.stdout


def test_the_expiry_worker_answers_the_charts_probes(saga: SagaEnv) -> None:
    """The worker, started with the environment the chart gives its pod (pointed at
    this machine's servers), answers the chart's probes: alive, and ready once it has
    started and Redis answers."""
    s, platform = saga.settings, saga.platform
    docs = render(
        platform,
        f"--set=external.postgres.url={s.database_url.value},external.redisUrl={s.redis_url.value},"
        f"external.natsUrl={s.nats_url},secrets.midtransServerKey={SANDBOX_KEY},"
        "nats.existingSecret=local",
    )
    deployment = by_component(docs)["expiry-worker"]
    (stored,) = of_kind(docs, "Secret").values()
    env = {
        **env_values(deployment),
        **{
            name: stored["stringData"][key]
            for name, (secret, key) in secret_refs(deployment).items()
            if secret == stored["metadata"]["name"]
        },
    }
    port = free_port()
    local = {  # this machine, and this test's own schema, streams and queue
        "KUBECONFIG": str(platform.kubeconfig),
        **platform.nats_credentials(env["NATS_USER"]).as_env(),
        "CHECKOUT_DB_SCHEMA": s.db_schema,
        "EVENTS_NAMESPACE": s.events_namespace,
        "CHECKOUT_EXPIRY_QUEUE": s.arq_queue,
        HEALTH_PORT: str(port),
    }
    probes = container(deployment)
    with python_module(
        "checkout_operator.worker",
        port=port,
        health_path=probes["readinessProbe"]["httpGet"]["path"],
        env={**env, **local},
        timeout=30,
    ) as worker:
        for probe in ("readinessProbe", "livenessProbe"):
            path = probes[probe]["httpGet"]["path"]
            answer = httpx.get(f"{worker.base_url}{path}", timeout=5)
            assert answer.json() == {"status": "ok"}, (probe, answer.text)
