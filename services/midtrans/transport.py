"""httpx's requests carried by aiohttp: the Midtrans client's default network layer.

httpx's own layer (httpcore, h11, anyio) costs more CPU per request than the call it
carries: in a py-spy profile of paid checkouts the Midtrans client was a quarter of
the operator's CPU, most of it there (an event and a lock set up per request, each
asking which async library runs, an import that fails every time). aiohttp, which the
apps already use for the apiserver, keeps one connection pool and parses in C. The
client keeps httpx's interface, so tests still hand it an ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import certifi
import httpx
from multidict import CIMultiDict


def _trusting_certifi() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on first use, in the running loop) for all requests."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Redirects and decompression are left to httpx, as with its own transport;
            # like it, trust certifi's CAs and honour HTTPS_PROXY / NO_PROXY.
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                trust_env=True,
                connector=aiohttp.TCPConnector(ssl=_trusting_certifi()),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(
            connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        headers = CIMultiDict(
            (key.decode("latin-1"), value.decode("latin-1")) for key, value in request.headers.raw
        )
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=headers,
                data=await request.aread() or None,
                timeout=timeout,
                allow_redirects=False,
            ) as reply:
                content = await reply.read()
                return httpx.Response(
                    reply.status,
                    headers=[(k, v) for k, v in reply.raw_headers],
                    content=content,
                    request=request,
                )
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except aiohttp.ClientConnectionError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise httpx.NetworkError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
