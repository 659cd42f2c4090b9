"""Request bodies every HTTP service takes the same way: capped, then strict JSON.

* :class:`BodyLimit` (ASGI middleware) refuses a body over the limit before the app
  reads it: at once when Content-Length says so, and while a streamed (chunked) body
  arrives, at the first byte past the limit. 413 ``BODY_TOO_LARGE``.
* :func:`parse_json` takes only what JSON (RFC 8259) and Unicode can carry: no
  ``NaN``/``Infinity``, numbers that fit a float, valid UTF-8, at most ``MAX_DEPTH``
  levels (Python's parser recurses: ~1000 levels used to be a 500), else 400
  ``MALFORMED``; and no U+0000 or lone surrogate in any string or key (Postgres, the
  apiserver and JSON encoders break on them), else 422 naming the field.
* :class:`StrictJsonRoute` makes FastAPI parse request bodies with :func:`parse_json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import INVALID_REQUEST, ProblemError, problem

MAX_BODY_BYTES = 64 * 1024
MAX_DEPTH = 32
TOO_LARGE = "BODY_TOO_LARGE"
MALFORMED = "MALFORMED"


def _too_large(limit: int) -> ProblemError:
    return ProblemError(413, TOO_LARGE, f"a request body is at most {limit} bytes")


class BodyLimit:
    """Caps request bodies at ``limit`` bytes, before they are read."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is None or declared > self.limit:
            if declared is None:
                error = ProblemError(400, MALFORMED, "Content-Length is not a number")
            else:
                error = _too_large(self.limit)
            await self._refuse(error, path, scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _too_large(self.limit)
            return message

        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except ProblemError as exc:  # raised by counted() past the app's handlers
            if started or exc.reason != TOO_LARGE:
                raise
            await self._refuse(exc, path, scope, receive, send)

    @staticmethod
    async def _refuse(
        error: ProblemError, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = problem(
            error.status_code,
            error.reason,
            str(error.detail),
            instance=path,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length (0 when absent: a streamed or empty body); None if unreadable."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else None
    return 0


def parse_json(raw: bytes) -> Any:
    """The body as JSON, strictly (see the module docstring); ProblemError otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProblemError(400, MALFORMED, "the body is not UTF-8") from exc
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ProblemError(400, MALFORMED, f"JSON nested deeper than {MAX_DEPTH}") from exc
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an int too long to read
        raise ProblemError(400, MALFORMED, f"the body is not JSON: {_first_line(exc)}") from exc
    _check(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _first_line(exc: ValueError) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _check(value: Any) -> None:
    """Depth, finite numbers and clean strings, walked without recursion."""
    stack: list[tuple[Any, list[str | int]]] = [(value, ["body"])]
    while stack:
        item, loc = stack.pop()
        if len(loc) > MAX_DEPTH + 1:
            raise ProblemError(400, MALFORMED, f"JSON nested deeper than {MAX_DEPTH}")
        if isinstance(item, float) and not math.isfinite(item):
            _refuse_field(loc, "number does not fit a 64-bit float", "finite_number")
        elif isinstance(item, str) and not _clean(item):
            _refuse_field(loc, "must not contain U+0000 or lone surrogates", "string_unicode")
        elif isinstance(item, list):
            stack.extend((v, [*loc, i]) for i, v in enumerate(item))
        elif isinstance(item, dict):
            for key, v in item.items():
                if not _clean(key):
                    _refuse_field(loc, "a key holds U+0000 or a lone surrogate", "string_unicode")
                stack.append((v, [*loc, key]))


def _clean(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _refuse_field(loc: list[str | int], msg: str, kind: str) -> None:
    shown = [p if isinstance(p, int) or _clean(p) else "?" for p in loc]
    error = {"loc": shown, "msg": msg, "type": kind}
    where = ".".join(map(str, shown))
    raise ProblemError(422, INVALID_REQUEST, f"invalid request: {where}: {msg}", errors=[error])


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read by :func:`parse_json` (FastAPI's documented way to
    change how a request is read: a custom Request in a custom route class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
