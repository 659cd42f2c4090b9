"""Every service's HTTP server parses with httptools (C), not h11 (pure Python, ~15 % of
the webhook listener's CPU per notification in py-spy; issue 12, session 8)."""

from __future__ import annotations

import ast
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from saga_kit.serving import http_server

ROOT = Path(__file__).resolve().parents[2]


async def _app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    raise AssertionError("not called")


def test_the_shared_server_parses_with_httptools() -> None:
    config = http_server(_app, "127.0.0.1", 0).config
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol


def test_every_uvicorn_config_in_the_services_names_httptools() -> None:
    unnamed = []
    for path in sorted((ROOT / "services").glob("*/**/*.py")):
        if "midtrans_sandbox" in path.parts:  # Midtrans' stand-in, not the product
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "Config"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "uvicorn"
            ):
                http = {k.arg: k.value for k in node.keywords}.get("http")
                if not (isinstance(http, ast.Constant) and http.value == "httptools"):
                    unnamed.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unnamed == []
