"""A small apiserver client on aiohttp that speaks raw dicts, the way every component
of the project talks to Kubernetes (Checkouts, Events, Leases).

Why not a library: kubernetes_asyncio costs ~60 MiB RSS to import (770 model modules)
and builds models of what we read; lightkube types every custom resource on each read.

Only :class:`ApiError` is imported eagerly: ``saga_kit.problems`` maps it for every HTTP
service, and the User and Product services never load aiohttp or yaml for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ApiError

if TYPE_CHECKING:
    from .client import MERGE_PATCH, METADATA_LIST, ApiClient
    from .config import ConfigError, Connection, in_cluster, load_config, load_kubeconfig

__all__ = [
    "MERGE_PATCH",
    "METADATA_LIST",
    "ApiClient",
    "ApiError",
    "ConfigError",
    "Connection",
    "in_cluster",
    "load_config",
    "load_kubeconfig",
]

_WHERE = {
    "MERGE_PATCH": ".client",
    "METADATA_LIST": ".client",
    "ApiClient": ".client",
    "ConfigError": ".config",
    "Connection": ".config",
    "in_cluster": ".config",
    "load_config": ".config",
    "load_kubeconfig": ".config",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
