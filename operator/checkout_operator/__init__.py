"""The Checkout saga operator (kopf handlers and the pure saga model).

Import name ``checkout_operator``: the folder is ``operator/`` but a package of
that name would shadow the standard library's ``operator`` module.
"""

from __future__ import annotations

import importlib
import sys

# kopf imports the kubernetes and kubernetes_asyncio clients when installed, only to
# recognise their model objects (~70 MiB; the operator hands kopf dicts and logs in
# with kopf's own login). The package imports kopf first, with them hidden, so no
# module of it can load kopf otherwise (tests/unit/test_app_imports.py checks);
# processes that already hold them (tests, tools) are left alone.
_KOPF_OPTIONAL_CLIENTS = ("kubernetes", "kubernetes_asyncio", "pykube")


def _import_kopf_without_clients() -> None:
    if "kopf" in sys.modules:
        return
    hidden = [name for name in _KOPF_OPTIONAL_CLIENTS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "not installed"
    try:
        importlib.import_module("kopf")
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


_import_kopf_without_clients()
