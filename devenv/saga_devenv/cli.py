"""``saga-devenv up|down|status|env|clean``: the local platform from one command.

``saga-devenv audit``: check that stock and money add up, read-only (docs/audit.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from saga_kit.settings import ConfigError

from . import apps, controlplane, node, servers
from .config import REPO_ROOT, DevConfig
from .process import DaemonError

CRD_NAME = "checkouts.checkout.saga.dev"
CRD_READY_SECONDS = 180


def kubectl(cfg: DevConfig, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cfg.binary("kubectl")), f"--kubeconfig={cfg.kubeconfig}", *args],
        check=check,
        capture_output=True,
        text=True,
    )


def apply_crds(cfg: DevConfig) -> None:
    kubectl(cfg, "apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    # Generous: a fresh apiserver on a loaded 2-core machine may take a while.
    kubectl(
        cfg,
        "wait",
        "--for=condition=Established",
        f"--timeout={CRD_READY_SECONDS}s",
        f"crd/{CRD_NAME}",
    )
    # Established comes before the resource's storage is ready (429 "storage is
    # (re)initializing" meanwhile): wait until a list succeeds.
    deadline = time.monotonic() + CRD_READY_SECONDS
    while kubectl(cfg, "get", "checkouts", "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise DaemonError(
                f"the Checkout resource is not served {CRD_READY_SECONDS} s after its CRD"
            )
        time.sleep(0.2)


def env_exports(cfg: DevConfig) -> dict[str, str]:
    return {
        "KUBECONFIG": str(cfg.kubeconfig),
        "PATH": f"{cfg.run_dir / 'bin'}:$PATH",
        "CHECKOUT_SAGA_DATABASE_URL": servers.postgres_dsn(cfg),
        "CHECKOUT_SAGA_REDIS_URL": cfg.redis_url,
        "CHECKOUT_SAGA_NATS_URL": cfg.nats_url,
        # NATS needs a user; this one may do anything (local only). The components'
        # users are in .run/secrets/nats-<user>.
        "CHECKOUT_SAGA_NATS_USER": servers.NATS_ADMIN,
        "CHECKOUT_SAGA_NATS_PASSWORD": servers.nats_credentials(
            cfg, servers.NATS_ADMIN
        ).password.value,
    }


def write_env_file(cfg: DevConfig) -> None:
    lines = []
    for key, value in env_exports(cfg).items():
        quoted = f'"{value}"' if key == "PATH" else shlex.quote(value)
        lines.append(f"export {key}={quoted}")
    path = cfg.run_dir / "env.sh"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # holds the local database and NATS admin passwords


def up(cfg: DevConfig, with_node: bool = False) -> None:
    began = time.monotonic()
    started = controlplane.start(cfg, node.node_ip() if with_node else None)
    plane_ready = time.monotonic() - began
    if with_node:
        started += node.start(cfg)
        print(f"node {node.NODE_NAME} Ready, CoreDNS up in {time.monotonic() - began:.1f}s")
    started += servers.start(cfg, node.node_ip() if with_node else None)
    apply_crds(cfg)
    write_env_file(cfg)
    started += apps.start(cfg)
    version = kubectl(cfg, "version", "-o", "json").stdout
    server_version = json.loads(version)["serverVersion"]["gitVersion"]
    print(f"control plane ready in {plane_ready:.1f}s (kube-apiserver {server_version})")
    print(f"started now: {', '.join(started) or 'nothing (all were running)'}")
    print(
        "\nThe local checkout-saga platform is up:\n"
        f"  kube-apiserver  {cfg.apiserver_url}\n"
        f"  postgres        127.0.0.1:{cfg.postgres_port} (db {servers.POSTGRES_DB})\n"
        f"  redis           {cfg.redis_display_url} (password in {cfg.run_dir}/secrets)\n"
        f"  nats/jetstream  {cfg.nats_url}\n"
        f"  user service    {apps.url(cfg.user_http_port)} (gRPC {cfg.user_grpc_port})\n"
        f"  product service {apps.url(cfg.product_http_port)} (gRPC {cfg.product_grpc_port})\n"
        f"  checkout API    {apps.url(cfg.api_port, '/docs')}\n"
        f"  webhook listener {apps.url(cfg.listener_port, apps.NOTIFICATIONS_PATH)}\n"
        f"  midtrans sandbox {apps.url(cfg.sandbox_port)}\n"
        f"  operator        metrics {apps.url(cfg.operator_metrics_port, '/metrics')}\n"
        f"  expiry worker   arq on {cfg.redis_display_url}\n"
        + (f"  node            {node.NODE_NAME} (docs/node.md)\n" if with_node else "")
        + f"  logs            {cfg.run_dir / 'logs'}\n"
        "\nUse it:\n"
        f"  source {cfg.run_dir / 'env.sh'}    # KUBECONFIG, kubectl {cfg.kube_version}, DSNs\n"
        "  kubectl get --raw /readyz\n"
        "  kubectl apply -f examples/checkout.yaml\n"
        "  kubectl get checkouts\n"
        "Stop it with scripts/down."
    )


def status(cfg: DevConfig) -> int:
    unhealthy = 0
    for daemon in controlplane.daemons(cfg) + servers.daemons(cfg) + apps.daemons(cfg):
        pid = daemon.pid()
        state = "stopped" if pid is None else ("healthy" if daemon.is_healthy() else "UNHEALTHY")
        unhealthy += state != "healthy"
        print(f"{daemon.name:23} {state:10} pid={pid or '-'} port={daemon.port}")
    for daemon, state in node.status(cfg):
        unhealthy += state != "healthy"
        print(f"{daemon.name:23} {state:10} pid={daemon.pid() or '-'} port={daemon.port}")
    return 1 if unhealthy else 0


def audit(argv: list[str]) -> int:
    """Exit 0: clean; 1: a mismatch; 2: something could not be checked."""
    # Imported here: the audit reads with the operator's and services' code, which
    # `up`, `down` and the test fixtures importing this module do not need.
    from . import audit_sources
    from .audit import audit as check_ledger

    parser = argparse.ArgumentParser(
        prog="saga-devenv audit",
        description="Check that stock, reservations, checkouts and payments agree. "
        "Read-only; see docs/audit.md.",
    )
    audit_sources.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = audit_sources.settings_from(args, audit_sources.local_config())
        snapshot = asyncio.run(audit_sources.load(settings))
    except audit_sources.CannotCheck as exc:
        if args.json:
            print(json.dumps({"ok": False, "exit_code": 2, "error": str(exc)}))
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    report = check_ledger(snapshot, settings.grace)
    strict = settings.strict
    print(json.dumps(report.as_json(strict)) if args.json else report.text(strict))
    return report.exit_code(strict)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["audit"]:
        return audit(argv[1:])
    parser = argparse.ArgumentParser(
        prog="saga-devenv", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "clean", "audit"])
    parser.add_argument(
        "--node", action="store_true", help="up: also a real node (kubelet, pods; docs/node.md)"
    )
    args = parser.parse_args(argv)
    try:
        cfg = DevConfig.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "up":
            up(cfg, with_node=args.node)
        elif args.command == "down":
            stopped = apps.stop(cfg) + node.stop(cfg) + servers.stop(cfg) + controlplane.stop(cfg)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        elif args.command == "clean":
            apps.stop(cfg)
            node.stop(cfg)
            servers.stop(cfg)
            controlplane.stop(cfg)
            for folder in (servers.postgres_root(cfg), cfg.run_dir):
                shutil.rmtree(folder, ignore_errors=True)
            print(f"stopped everything and removed {cfg.run_dir}")
        elif args.command == "status":
            return status(cfg)
        else:
            write_env_file(cfg)
            print((cfg.run_dir / "env.sh").read_text(), end="")
    except DaemonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: {shlex.join(exc.cmd)} failed:\n{exc.stderr}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `saga-devenv status | head`: the reader left; say nothing more, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it
    return 0


if __name__ == "__main__":
    sys.exit(main())
