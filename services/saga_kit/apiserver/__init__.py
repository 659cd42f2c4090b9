"""A small apiserver client on aiohttp that speaks raw dicts, the way every component
of the project talks to Kubernetes (Checkouts, Events, Leases).

Why not a library: kubernetes_asyncio costs ~60 MiB RSS to import (770 model modules)
and builds models of what we read; lightkube types every custom resource on each read.
"""

from .client import MERGE_PATCH, ApiClient
from .config import ConfigError, Connection, in_cluster, load_config, load_kubeconfig
from .errors import ApiError

__all__ = [
    "MERGE_PATCH",
    "ApiClient",
    "ApiError",
    "ConfigError",
    "Connection",
    "in_cluster",
    "load_config",
    "load_kubeconfig",
]
