"""One aiohttp session to the apiserver: JSON requests, paged lists and watches, every
body a plain dict.

Every request has a deadline (connect and total); a watch only a connect deadline and
a read deadline past the server's own ``timeoutSeconds``. A request that runs out of
time raises ``aiohttp.ServerTimeoutError`` (an ``aiohttp.ClientError`` and a
``TimeoutError``), so callers treat it as the apiserver out of reach.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp

from .config import Connection, load_config
from .errors import ApiError

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
PAGE_SIZE = 500
# A LIST answered with each item's metadata only (no spec, no status).
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
Params = Mapping[str, str | int | bool]


class ApiClient:
    def __init__(
        self,
        connection: Connection | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.connection = connection or load_config()
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            ssl_context = self.connection.ssl_context
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context else False),
                timeout=self._timeout,
            )
        return self._session

    def _headers(self, content_type: str | None = None, accept: str = JSON) -> dict[str, str]:
        headers = {"Accept": accept}
        authorization = self.connection.authorization()
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> dict[str, Any]:
        """The decoded answer; :class:`ApiError` for a non-2xx one. ``accept`` may ask for
        another representation (e.g. :data:`METADATA_LIST`)."""
        raw = await self._send(method, path, params, body, content_type, accept)
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            raise ApiError(502, "BadAnswer", f"{method} {path}: not JSON") from exc
        if not isinstance(decoded, dict):
            raise ApiError(502, "BadAnswer", f"{method} {path}: not an object")
        return decoded

    async def send(
        self, method: str, path: str, *, body: Any = None, content_type: str = JSON
    ) -> None:
        """A request whose answer is not needed (read, not decoded)."""
        await self._send(method, path, None, body, content_type)

    async def _send(
        self,
        method: str,
        path: str,
        params: Params | None,
        body: Any,
        content_type: str,
        accept: str = JSON,
    ) -> bytes:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        session = self._open()
        try:
            async with session.request(
                method,
                self.connection.server + path,  # the server's own path kept (a proxy's)
                params=_query(params),
                data=data,
                headers=self._headers(content_type if data is not None else None, accept),
            ) as answer:
                raw = await answer.read()
                if answer.status >= 300:
                    raise ApiError.from_answer(answer.status, answer.reason or "", raw)
                return raw
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise
            raise aiohttp.ServerTimeoutError(
                f"{method} {path}: no answer within {self._timeout.total:g} s"
            ) from exc

    async def pages(
        self,
        path: str,
        *,
        params: Params | None = None,
        limit: int = PAGE_SIZE,
        accept: str = JSON,
    ) -> AsyncIterator[dict[str, Any]]:
        """A LIST read in pages of ``limit`` items (each answer as it came)."""
        query = dict(params or {}, limit=limit)
        while True:
            page = await self.request("GET", path, params=query, accept=accept)
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    async def watch(
        self, path: str, *, params: Params | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The watch events (``{"type", "object"}``) of a collection, as they come, until
        the server ends the watch. An ERROR event raises :class:`ApiError` (410 Gone: the
        resourceVersion is too old; list again)."""
        query = dict(params or {}, watch=1)
        server_seconds = int(query.get("timeoutSeconds", 0) or 0)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._connect_timeout,
            sock_read=server_seconds + 30 if server_seconds else None,
        )
        session = self._open()
        async with session.get(
            self.connection.server + path,
            params=_query(query),
            headers=self._headers(),
            timeout=timeout,
        ) as answer:
            if answer.status >= 300:
                raise ApiError.from_answer(answer.status, answer.reason or "", await answer.read())
            pending = b""
            async for chunk in answer.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _event(line)
            if pending.strip():
                yield _event(pending)


def _event(line: bytes) -> dict[str, Any]:
    event = json.loads(line)
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise ApiError(502, "BadAnswer", "a watch event without an object")
    if event.get("type") == "ERROR":
        raise ApiError.from_status(event["object"])
    return event


def _query(params: Params | None) -> dict[str, str] | None:
    if not params:
        return None
    return {
        k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in params.items()
    }
