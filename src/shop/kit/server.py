"""The HTTP server's side of `shop serve`: uvicorn's httptools protocol with a read deadline.

uvicorn closes idle keep-alive connections, but a client that sends half a request and then
nothing held its connection (and its worker's attention) for as long as it liked. Here each
request must arrive whole within ``SHOP_REQUEST_READ_TIMEOUT_SECONDS`` of the connection
opening, or of its first byte on a kept-alive connection; otherwise the connection is closed.
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shop.kit.config import get_settings


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_deadline is None:  # the next request on a kept-alive connection
            self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        timeout = get_settings().request_read_timeout_seconds
        self._read_deadline = self.loop.call_later(timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
