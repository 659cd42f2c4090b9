"""A Kubernetes API client the way every component of the project connects."""

from __future__ import annotations

import os

from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig


async def kube_api_client() -> kclient.ApiClient:
    """In a Pod: its service account; elsewhere: $KUBECONFIG."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kconfig.load_incluster_config()  # type: ignore[no-untyped-call]
        return kclient.ApiClient()
    configuration = kclient.Configuration()
    await kconfig.load_kube_config(
        config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
    )
    return kclient.ApiClient(configuration)
