"""Objects the node tests create: nodebox pods, Deployments and Services."""

from __future__ import annotations

from typing import Any

PORT = 8080


def container(image: str, *args: str) -> dict[str, Any]:
    return {
        "name": "box",
        "image": image,
        "imagePullPolicy": "Never",  # made locally; there is no registry
        "args": list(args),
    }


def server(image: str) -> dict[str, Any]:
    """A container answering HTTP on :data:`PORT`, Ready once it answers."""
    return {
        **container(image, "serve", str(PORT)),
        "ports": [{"containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 1},
    }


def pod(name: str, spec_container: dict[str, Any]) -> dict[str, Any]:
    spec = {"containers": [spec_container], "terminationGracePeriodSeconds": 1}
    return _object("v1", "Pod", {"name": name, "labels": {"app": name}}, spec)


def deployment(name: str, image: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    template = pod(name, server(image))
    del template["apiVersion"], template["kind"], template["metadata"]["name"]
    spec = {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}
    return _object("apps/v1", "Deployment", {"name": name}, spec)


def service(name: str, kind: str = "ClusterIP") -> dict[str, Any]:
    ports = [{"port": 80, "targetPort": PORT, "protocol": "TCP"}]
    spec = {"type": kind, "selector": {"app": name}, "ports": ports}
    return _object("v1", "Service", {"name": name}, spec)


def _object(
    api_version: str, kind: str, metadata: dict[str, Any], spec: dict[str, Any]
) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}
