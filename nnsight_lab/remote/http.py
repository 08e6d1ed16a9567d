"""The server's HTTP pieces: JSON answers that can echo anything a client sent, and a
limit on request bodies enforced before and while they arrive (a huge body is never held).
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse


class Json(JSONResponse):
    """JSON with non-ASCII escaped: any string a client sent can be echoed back."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


class TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request is larger than this server accepts ({limit} bytes)")


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes, before or while they arrive."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return await Json({"detail": "bad Content-Length"}, 400)(scope, receive, send)
        if int(length) > self.limit:
            return await Json({"detail": TooLarge(self.limit).detail}, 413)(scope, receive, send)
        seen = 0

        async def counted() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge(self.limit)
            return message

        await self.app(scope, counted, send)
