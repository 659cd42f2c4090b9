"""A Kubernetes API client the way every component of the project connects."""

from __future__ import annotations

from .apiserver import ApiClient, load_config


async def kube_api_client() -> ApiClient:
    """In a Pod: its service account; elsewhere: $KUBECONFIG (else ~/.kube/config)."""
    return ApiClient(load_config())
