"""httpx's requests carried by aiohttp: the Midtrans client's default network layer.

httpx's own layer (httpcore, h11, anyio) costs more CPU per request than the call it
carries: in a py-spy profile of paid checkouts the Midtrans client was a quarter of
the operator's CPU, most of it there (an event and a lock set up per request, each
asking which async library runs, an import that fails every time). aiohttp, which the
apps already use for the apiserver, keeps one connection pool and parses in C. The
client keeps httpx's interface, so tests still hand it an ``httpx.MockTransport``.

The environment's proxy (HTTP(S)_PROXY, NO_PROXY, ~/.netrc for its credentials) is
looked up once per origin. aiohttp's ``trust_env`` looks it up on every request, in a
thread, reading ~/.netrc each time: 4-6 % of the operator's and the listener's busy
CPU in a py-spy profile of paid checkouts (issue 12, session 8).
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import certifi
import httpx
from aiohttp.helpers import BasicAuth, get_env_proxy_for_url
from multidict import CIMultiDict
from yarl import URL

Proxy = tuple[URL | None, BasicAuth | None]


def _trusting_certifi() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on first use, in the running loop) for all requests."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str, int | None], Proxy] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Redirects and decompression are left to httpx, as with its own transport;
            # like it, trust certifi's CAs and honour HTTPS_PROXY / NO_PROXY (_proxy).
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                connector=aiohttp.TCPConnector(ssl=_trusting_certifi()),
            )
        return self._session

    def _proxy(self, url: URL) -> Proxy:
        """The environment's proxy for ``url``'s origin, as aiohttp's trust_env finds it."""
        origin = (url.scheme, url.host or "", url.port)
        found = self._proxies.get(origin)
        if found is None:
            try:
                found = get_env_proxy_for_url(url)
            except LookupError:  # none, or NO_PROXY names the host
                found = (None, None)
            self._proxies[origin] = found
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(
            connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        headers = CIMultiDict(
            (key.decode("latin-1"), value.decode("latin-1")) for key, value in request.headers.raw
        )
        url = URL(str(request.url), encoded=True)
        proxy, proxy_auth = self._proxy(url)
        try:
            async with self._open().request(
                request.method,
                url,
                headers=headers,
                proxy=proxy,
                proxy_auth=proxy_auth,
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
