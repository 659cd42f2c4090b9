"""containerd with runc (Debian's packages) and CNI bridge networking for the node.

Our own containerd instance: its config, data and sockets are the run folder's
(``/etc/containerd`` and the system service are left alone). The CRI plugin runs
pods with runc under cgroupfs (the host has cgroups v1), networks them with the
bridge, host-local, portmap and loopback plugins on ``POD_CIDR``, and uses a
locally built sandbox image, since no registry is reachable.

:func:`teardown` undoes what pods leave on the host (sandboxes and their network
namespaces, shims, container processes, mounts, the bridge), so the machine is
clean for the next ``up --node``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .node_layout import BRIDGE, CONTAINERD_METRICS_PORT, POD_CIDR, NodeLayout
from .process import Daemon, DaemonError, http_get, pid_alive


def containerd_config(layout: NodeLayout, sandbox_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{layout.root / "containerd"}"
state = "{layout.runtime_state / "state"}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[metrics]
  address = "127.0.0.1:{CONTAINERD_METRICS_PORT}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  # This host refuses to lower a process's oom_score_adj even to root (pods ask for
  # down to -998): keep every container's at or above containerd's own.
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{layout.binary("cni-plugins")}"
  conf_dir = "{layout.cni_conf_dir}"
"""


def cni_conflist(layout: NodeLayout) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "checkout-saga",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,  # a pod reaches itself through its own Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.root / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def containerd_daemon(layout: NodeLayout, sandbox_image: str) -> Daemon:
    """containerd; :func:`prepare` writes its config first."""
    text = containerd_config(layout, sandbox_image)

    def healthy() -> bool:
        metrics = http_get(f"http://127.0.0.1:{CONTAINERD_METRICS_PORT}/v1/metrics")
        return metrics is not None and layout.containerd_socket.exists()

    return Daemon(
        name="containerd",
        argv=["containerd", f"--config={layout.root / 'containerd.toml'}"],
        run_dir=layout.cfg.run_dir,
        port=CONTAINERD_METRICS_PORT,
        healthy=healthy,
        stamp=hashlib.sha256(text.encode()).hexdigest()[:16],
    )


def prepare(layout: NodeLayout, sandbox_image: str) -> None:
    if shutil.which("containerd") is None or shutil.which("runc") is None:
        raise DaemonError("containerd and runc are missing: run scripts/bootstrap.sh --node")
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.runtime_state.mkdir(parents=True, exist_ok=True)
    layout.runtime_state.chmod(0o700)
    (layout.root / "containerd.toml").write_text(containerd_config(layout, sandbox_image))
    link = layout.containerd_socket_link
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.readlink() != layout.containerd_socket:
        link.unlink(missing_ok=True)
        link.symlink_to(layout.containerd_socket)
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = layout.cni_conf_dir / "10-checkout-saga.conflist"
    conflist.write_text(json.dumps(cni_conflist(layout), indent=2) + "\n")


def ctr(layout: NodeLayout, *args: str) -> subprocess.CompletedProcess[str]:
    """containerd's own client, in the namespace the CRI uses; raises on failure."""
    argv = ["ctr", f"--address={layout.containerd_socket}", "--namespace=k8s.io", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)


def crictl(layout: NodeLayout, *args: str, timeout: float = 60) -> None:
    endpoint = f"--runtime-endpoint=unix://{layout.containerd_socket}"
    quietly(str(layout.binary("crictl")), endpoint, *args, timeout=timeout)


def quietly(*argv: str, timeout: float = 60) -> None:
    """Run a clean-up command whose failure changes nothing for the caller (what it
    removes may already be gone, or the tool may be missing on a machine without a node)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(argv, capture_output=True, check=False, timeout=timeout)


def remove_pods(layout: NodeLayout) -> None:
    """Stop and remove every pod sandbox through the CRI: containers stop, CNI
    releases addresses and network namespaces are deleted."""
    crictl(layout, "rmp", "--force", "--all", timeout=120)


def teardown(layout: NodeLayout) -> None:
    """What is left on the host once kubelet and containerd are stopped."""
    # Containers left running (containerd was not there to remove them), then shims.
    for pids in (_pids_in_kubepods(), _shims(layout)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
    for mount in _mounts_under(layout.root, layout.runtime_state):
        quietly("umount", "--lazy", str(mount))
    quietly("ip", "link", "delete", BRIDGE)
    shutil.rmtree(layout.root / "cni" / "ipam", ignore_errors=True)  # leases of gone pods
    shutil.rmtree(layout.runtime_state, ignore_errors=True)


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((int(entry.name), (entry / "cmdline").read_bytes().decode()))
    return found


def _shims(layout: NodeLayout) -> list[int]:
    socket = str(layout.containerd_socket)
    return [
        pid for pid, cmdline in _processes() if "containerd-shim" in cmdline and socket in cmdline
    ]


def _pids_in_kubepods() -> list[int]:
    pids = []
    for pid, _ in _processes():
        with contextlib.suppress(OSError):
            if ":/kubepods/" in Path(f"/proc/{pid}/cgroup").read_text():
                pids.append(pid)
    return pids


def _mounts_under(*roots: Path) -> list[Path]:
    """Mount points below ``roots``, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].replace("\\040", " "))
        if any(point.is_relative_to(root) for root in roots):
            points.append(point)
    return sorted(points, key=lambda p: len(p.parts), reverse=True)
