"""The node's images, made here: no registry is reachable from this machine.

An image is one layer holding a static binary (built by scripts/build-binaries.sh
node), packed as a ``docker save`` archive and imported into containerd's
``k8s.io`` namespace, where the CRI finds it. Archives are byte-for-byte
reproducible, so importing again changes nothing. Pods use them with
``imagePullPolicy: Never`` (or IfNotPresent).

* ``pause``: the pod sandbox (``nodebox pause``), containerd's ``sandbox_image``;
* ``nodebox``: a small test workload (``nodebox serve|resolve|get``);
* ``coredns``: the cluster DNS.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from . import node_runtime
from .node_layout import NodeLayout, nodebox_version

REPOSITORY = "localhost/checkout-saga"


@dataclass(frozen=True)
class Image:
    name: str  # e.g. localhost/checkout-saga/pause:<tag>
    binary: Path  # copied to the path entrypoint[0] names
    entrypoint: tuple[str, ...]


def pause_image(layout: NodeLayout) -> Image:
    box = layout.binary("nodebox")
    return Image(f"{REPOSITORY}/pause:{nodebox_version()}", box, ("/nodebox", "pause"))


def nodebox_image(layout: NodeLayout) -> Image:
    box = layout.binary("nodebox")
    return Image(f"{REPOSITORY}/nodebox:{nodebox_version()}", box, ("/nodebox",))


def coredns_image(layout: NodeLayout) -> Image:
    binary = layout.binary("coredns")
    tag = binary.name.removeprefix("coredns-")
    return Image(f"{REPOSITORY}/coredns:{tag}", binary, ("/coredns",))


def archive(image: Image) -> bytes:
    """``image`` as a reproducible ``docker save`` archive."""
    program = image.entrypoint[0].lstrip("/")
    layer = _tar({program: (image.binary.read_bytes(), 0o755)})
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(image.entrypoint), "Env": ["PATH=/"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        },
        sort_keys=True,
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = [
        {"Config": config_name, "RepoTags": [image.name], "Layers": [f"{layer_digest}/layer.tar"]}
    ]
    return _tar(
        {
            f"{layer_digest}/layer.tar": (layer, 0o644),
            config_name: (config, 0o644),
            "manifest.json": (json.dumps(manifest).encode(), 0o644),
        }
    )


def ensure_imported(layout: NodeLayout, *images: Image) -> None:
    """Import what containerd does not have yet."""
    present = set(node_runtime.ctr(layout, "images", "list", "--quiet").stdout.split())
    folder = layout.root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        if image.name in present:
            continue
        path = folder / f"{image.name.rsplit('/', 1)[1].replace(':', '-')}.tar"
        path.write_bytes(archive(image))
        node_runtime.ctr(layout, "images", "import", str(path))


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
