"""What every HTTP answer gets, whatever the route: both spellings of a path, safe headers,
CORS only where configured, and no route reached through a control character."""

from collections.abc import Sequence
from typing import ClassVar

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shop.kit.client_address import ClientAddress
from shop.kit.errors import problem_response
from shop.kit.observability import RequestLog

# Answers that must never be stored by a browser or a proxy on the way: tokens, payments,
# anything answered to an authenticated caller.
PRIVATE_PREFIXES = ("/auth/",)


def serve_both_spellings(app: FastAPI) -> None:
    """Serve ``/cart/add`` as ``/cart/add/`` (and ``/auth/me/`` as ``/auth/me``) directly.

    Starlette would answer the other spelling with a redirect whose ``Location`` it builds
    from the ``Host`` header, which a client controls. Instead, a path no route matches is
    tried once with its trailing slash added or removed, and answered by that route.
    """
    router = app.router
    router.redirect_slashes = False
    not_found = router.default

    async def other_spelling(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path != "/" and not scope.get("shop.respelled"):
            other = path[:-1] if path.endswith("/") else path + "/"
            respelled = {**scope, "path": other, "raw_path": other.encode(), "shop.respelled": 1}
            if any(route.matches(respelled)[0] is not Match.NONE for route in router.routes):
                await router.app(respelled, receive, send)
                scope["route"] = respelled.get("route")  # for the request's log line
                return
        await not_found(scope, receive, send)

    router.default = other_spelling


class SecurityHeaders:
    """``nosniff``, no framing, no referrer; ``no-store`` on private answers."""

    ALWAYS: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]
    PRIVATE: ClassVar[list[tuple[bytes, bytes]]] = [(b"cache-control", b"no-store")]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith(PRIVATE_PREFIXES) or any(
            name == b"authorization" for name, _ in scope["headers"]
        )
        added = self.ALWAYS + self.PRIVATE if private else self.ALWAYS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if private:  # no-store replaces whatever the route said
                    headers = [h for h in headers if h[0] != b"cache-control"]
                message["headers"] = headers + added
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RejectControlCharacters:
    """Answer 404 for a path with control characters.

    Starlette's route patterns end in ``$``, which also matches before a final newline,
    so ``/discounts/%0A`` would otherwise reach the list of discounts.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(ord(c) < 32 for c in scope["path"]):
            response = problem_response(404, "not_found", "Not Found", "No such resource")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LimitBody:
    """Refuse a request body over ``max_bytes`` with 413: at once when its Content-Length
    says so, else as soon as that much has streamed in (chunked bodies too); never read past
    the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)  # no body to limit
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes an HTTPException from here on to the error handlers.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, receive_within_limit, send)

    def _detail(self) -> str:
        return f"The request body may be at most {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, "content_too_large", "Content too large", self._detail())
        await response(scope, receive, send)


def install_middleware(app: FastAPI, max_body_bytes: int, cors_origins: Sequence[str]) -> None:
    """Outermost last: the client's address, the request's id and log line, CORS, then the
    headers every answer gets, then the guards."""
    serve_both_spellings(app)
    app.add_middleware(LimitBody, max_bytes=max_body_bytes)
    app.add_middleware(RejectControlCharacters)
    app.add_middleware(SecurityHeaders)
    if cors_origins:  # off unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["Idempotent-Replayed", "Retry-After", "X-Request-ID"],
        )
    app.add_middleware(RequestLog)
    app.add_middleware(ClientAddress)
