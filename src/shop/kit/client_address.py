"""The client's address, as the throttles, the request log and the rate limits see it.

Behind a proxy every request comes from the proxy. A proxy the shop is told to trust
(``SHOP_TRUSTED_PROXIES``) names the client in ``X-Forwarded-For``, each hop appending the
address it received the request from; the client is the right-most address there that is
not one of the trusted proxies (anything left of it was written by whoever sent the request,
so it is never believed). From a peer that is not trusted the header is ignored: a client
cannot choose its own address.
"""

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import ASGIApp, Receive, Scope, Send

Networks = Sequence[IPv4Network | IPv6Network]


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _among(address: IPv4Address | IPv6Address, trusted: Networks) -> bool:
    return any(address in network for network in trusted)


def resolve(peer: str, forwarded_for: Sequence[str], trusted: Networks) -> str:
    """The client's address for a request from ``peer`` carrying these ``X-Forwarded-For``
    values (in the order received)."""
    proxy = _address(peer)
    if proxy is None or not _among(proxy, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # a hop that is no address: believe nothing further left
        if not _among(address, trusted):
            return str(address)
    return peer  # every hop is a trusted proxy (or there is none): the nearest one


class ClientAddress:
    """Puts the resolved client address in the request's scope, for everything after it.
    The trusted proxies are the application's settings (``SHOP_TRUSTED_PROXIES``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("client"):
            trusted = scope["app"].state.settings.trusted_proxies
            host, port = scope["client"]
            if trusted:
                forwarded = [
                    value.decode("latin-1")
                    for name, value in scope["headers"]
                    if name == b"x-forwarded-for"
                ]
                client = resolve(host, forwarded, trusted)
                if client != host:
                    scope = {**scope, "client": (client, port)}
        await self.app(scope, receive, send)
