"""saga_kit.apiserver against the real apiserver: Status errors, paged lists, watches
(events, a too-old version), and a deadline on a server that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from saga_kit.apiserver import ApiClient, ApiError, Connection, load_config
from tests.conftest import Platform
from tests.helpers.processes import free_port


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[ApiClient]:
    client = ApiClient(load_config(platform.kubeconfig))
    yield client
    await client.close()


def _config_maps(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps"


async def _make(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    return await api.request("POST", _config_maps(namespace), body=body)


async def test_a_refusal_carries_the_status_object(api: ApiClient, namespace: str) -> None:
    with pytest.raises(ApiError) as missing:
        await api.request("GET", f"{_config_maps(namespace)}/nope")
    assert (missing.value.status, missing.value.reason) == (404, "NotFound")
    assert '"nope" not found' in missing.value.message
    await _make(api, namespace, "twice")
    with pytest.raises(ApiError) as twice:
        await _make(api, namespace, "twice")
    assert (twice.value.status, twice.value.reason) == (409, "AlreadyExists")


async def test_a_list_is_read_in_pages(api: ApiClient, namespace: str) -> None:
    for i in range(5):
        await _make(api, namespace, f"cm-{i}")
    pages = [page async for page in api.pages(_config_maps(namespace), limit=2)]
    names = [item["metadata"]["name"] for page in pages for item in page["items"]]
    # kube-root-ca.crt may or may not be there yet (the controller-manager makes it).
    assert [n for n in names if n.startswith("cm-")] == [f"cm-{i}" for i in range(5)]
    assert len(pages) == -(-len(names) // 2) and all(len(p["items"]) <= 2 for p in pages)


async def test_a_watch_streams_changes_from_a_version(api: ApiClient, namespace: str) -> None:
    listed = await api.request("GET", _config_maps(namespace), params={"limit": 1})
    version = listed["metadata"]["resourceVersion"]
    await _make(api, namespace, "watched")
    events = api.watch(
        _config_maps(namespace),
        params={"resourceVersion": version, "allowWatchBookmarks": True, "timeoutSeconds": 30},
    )
    async with contextlib.aclosing(events):
        async with asyncio.timeout(30):
            async for event in events:
                if event["object"]["metadata"].get("name") == "watched":
                    break
    assert event["type"] == "ADDED"


async def test_a_watch_error_event_of_a_gone_version_says_410() -> None:
    """The apiserver ends a watch from a compacted version with an ERROR event carrying a
    410 Status (whether it does for version 1 depends on etcd's compaction, so a local
    server plays that answer)."""
    gone = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": "too old resource version: 1 (5)",
            "reason": "Expired",
            "code": 410,
        },
    }

    async def watch(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse()
        await answer.prepare(request)
        await answer.write(json.dumps(gone).encode() + b"\n")
        await answer.write_eof()
        return answer

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps", watch)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = ApiClient(Connection(f"http://127.0.0.1:{port}", None))
    try:
        with pytest.raises(ApiError) as error:
            async with asyncio.timeout(10):
                async for _ in client.watch(_config_maps("ns"), params={"resourceVersion": "1"}):
                    pass
        assert (error.value.status, error.value.reason) == (410, "Expired")
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_server_that_never_answers_runs_out_of_time() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ApiClient(Connection(f"http://127.0.0.1:{port}", None), timeout=0.5)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(aiohttp.ServerTimeoutError, match=r"no answer within 0\.5 s"):
                await client.request("GET", "/api")
    finally:
        await client.close()
        server.close()
