"""The real apiserver behind a local proxy that can make a watch miss events and then
answer 410 Gone, as the apiserver does when etcd has compacted the version a watch
resumes from (which a test cannot bring about on demand: it depends on compaction).

Everything else (LISTs, GETs, the watch's events outside the gap) is the apiserver's
own answer. ``gap()`` drops the watch streams' events from then on; ``gone()`` ends the
open streams, either with an ERROR event carrying a 410 Status or by closing them (the
server's own timeout) so that the resumed watch is answered HTTP 410; in both cases any
watch from a version older than the gap's end is answered 410 and events pass again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from saga_kit.apiserver import ApiClient, ApiError, Connection
from tests.helpers.processes import free_port

Event = dict[str, Any]
How = Literal["error event", "http 410"]

_END: Event = {}


def gone_status(version: str) -> Event:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f"too old resource version: {version}",
        "reason": "Expired",
        "code": 410,
    }


@dataclass
class WatchGap:
    upstream: ApiClient
    _collection: str  # the path of the watched collection
    url: str = ""
    lists: int = 0  # non-watch GETs of the collection
    watches: list[str] = field(default_factory=list)  # the resourceVersion of each watch
    refused: int = 0  # watches answered 410
    _held: bool = False
    _gone_below: int = 0
    _streams: set[asyncio.Queue[Event]] = field(default_factory=set)

    def gap(self) -> None:
        """From now the watch streams show nothing."""
        self._held = True

    async def gone(self, how: How) -> None:
        """The events dropped since ``gap()`` are compacted away: any watch from before
        now is told 410 (``how``: on the open stream, or when it resumes)."""
        listed = await self.upstream.request("GET", self._collection, params={"limit": 1})
        self._gone_below = int(listed["metadata"]["resourceVersion"])
        end = {"type": "ERROR", "object": gone_status("?")} if how == "error event" else _END
        for stream in self._streams:
            stream.put_nowait(end)
        self._held = False

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        params = {k: v for k, v in request.query.items() if k != "watch"}
        if "watch" not in request.query:
            self.lists += 1
            try:
                return web.json_response(
                    await self.upstream.request("GET", request.path, params=params)
                )
            except ApiError as exc:
                status = {"kind": "Status", "code": exc.status, "reason": exc.reason}
                return web.json_response(status | {"message": exc.message}, status=exc.status)
        version = params.get("resourceVersion", "")
        self.watches.append(version)
        if version.isdigit() and int(version) < self._gone_below:
            self.refused += 1
            return web.json_response(gone_status(version), status=410)
        return await self._stream(request, params)

    async def _stream(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._streams.add(queue)

        async def pump() -> None:
            try:
                async for event in self.upstream.watch(request.path, params=params):
                    if not self._held:
                        queue.put_nowait(event)
            finally:
                queue.put_nowait(_END)

        pumping = asyncio.create_task(pump())
        answer = web.StreamResponse()
        answer.content_type = "application/json"
        await answer.prepare(request)
        try:
            # The client may hang up first (as it does on an ERROR event).
            with contextlib.suppress(ConnectionResetError):
                while (event := await queue.get()) is not _END:
                    await answer.write(json.dumps(event).encode() + b"\n")
                    if event["type"] == "ERROR":
                        break
                await answer.write_eof()
        finally:
            self._streams.discard(queue)
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pumping
        return answer

    def client(self) -> ApiClient:
        """A client of the proxy (no credentials: the proxy brings its own)."""
        return ApiClient(Connection(self.url, None))


@contextlib.asynccontextmanager
async def watch_gap(upstream: ApiClient, collection: str) -> AsyncIterator[WatchGap]:
    """A :class:`WatchGap` in front of ``upstream`` for the ``collection`` path."""
    proxy = WatchGap(upstream, collection)
    app = web.Application()
    app.router.add_route("GET", "/{path:.*}", proxy._answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        for stream in proxy._streams:
            stream.put_nowait(_END)
        await runner.cleanup()
