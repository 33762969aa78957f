"""Stripe's side of the payment tests: a real localstripe process (a Stripe API emulator, run
as a separate program as the embedded database is), and the shop wired to it."""

import asyncio
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from shop.kit.config import AppSettings
from shop.kit.embedded import free_port
from shop.payments.stripe_provider import StripeProvider

WEBHOOK_SECRET = "whsec_test_secret_of_the_shop_endpoint"
PUBLISHABLE_KEY = "pk_test_shop"  # what Stripe.js holds in the customer's browser
# localstripe knows the test cards by number; Stripe's pm_card_* names only some of them.
CARDS = {
    "succeeds": "4242424242424242",
    "declined": "4000000000000341",
    "authentication": "4000002760003184",
}


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    program = shutil.which("localstripe", path=str(Path(sys.executable).parent))
    assert program is not None, "localstripe is installed with the dev extras"
    port = free_port()
    process = subprocess.Popen(
        [program, "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/v1/balance", headers={"Authorization": "Bearer sk_test_x"})
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "localstripe did not start"
            assert process.poll() is None, "localstripe exited"
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)


@dataclass
class Stripe:
    """localstripe, as the tests see it: Stripe's API, and what the customer's browser does."""

    url: str
    provider: StripeProvider
    http: httpx.AsyncClient

    async def card(self, which: str) -> str:
        """A PaymentMethod for one of the test cards."""
        made = await self.http.post(
            "/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": CARDS[which],
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )
        assert made.status_code == 200, made.text
        method: str = made.json()["id"]
        return method

    async def intent(self, payment_intent: str) -> dict[str, Any]:
        found = await self.http.get(f"/v1/payment_intents/{payment_intent}")
        assert found.status_code == 200, found.text
        body: dict[str, Any] = found.json()
        return body

    async def authenticate(self, next_action: dict[str, Any], *, success: bool) -> None:
        """Stripe.js's handleNextAction, as the customer completes (or fails) 3-D Secure."""
        done = await self.http.post(
            f"/v1/payment_intents/{next_action['payment_id']}/_authenticate",
            data={
                "client_secret": next_action["client_secret"],
                "success": "true" if success else "false",
                "key": PUBLISHABLE_KEY,
            },
        )
        assert done.status_code == 200, done.text

    async def refunds(self, payment_intent: str) -> list[dict[str, Any]]:
        found = await self.http.get("/v1/refunds", params={"payment_intent": payment_intent})
        assert found.status_code == 200, found.text
        refunds: list[dict[str, Any]] = found.json()["data"]
        return refunds

    async def send_webhooks_to(self, base: str) -> None:
        """Register the shop's endpoint; localstripe posts each event about 1 s later."""
        registered = await self.http.post(
            "/_config/webhooks/shop",
            data={"url": f"{base}/payments/stripe/webhook", "secret": WEBHOOK_SECRET},
        )
        assert registered.status_code == 200, registered.text

    async def stop_webhooks(self) -> None:
        # localstripe has no way to remove an endpoint: point it where nothing listens.
        await self.send_webhooks_to(f"http://127.0.0.1:{free_port()}")


def signed(event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> Any:
    """An event as Stripe posts it: the body and its Stripe-Signature header."""
    body = json.dumps(event)
    timestamp = int(time.time()) if at is None else at
    signature = hmac.new(
        secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256
    ).hexdigest()
    return body, {"Stripe-Signature": f"t={timestamp},v1={signature}"}


def event_for(intent: dict[str, Any], kind: str, event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "data": {"object": intent},
    }


@pytest.fixture
async def stripe(
    app: FastAPI, settings: AppSettings, localstripe_url: str
) -> AsyncIterator[Stripe]:
    """The shop with Stripe as a provider, on localstripe; webhooks off until a test
    registers them."""
    provider = StripeProvider("sk_test_shop", localstripe_url, localstripe=True)
    providers = app.state.payment_providers
    app.state.payment_providers = {**providers, "stripe": provider}
    settings.stripe_secret_key = SecretStr("sk_test_shop")
    settings.stripe_webhook_secret = SecretStr(WEBHOOK_SECRET)
    # Deadlines are passed by moving the clock, within the test tokens' 30 minutes.
    settings.payment_timeout_seconds = 600
    async with httpx.AsyncClient(
        base_url=localstripe_url, headers={"Authorization": "Bearer sk_test_shop"}
    ) as http:
        stripe = Stripe(localstripe_url, provider, http)
        await stripe.stop_webhooks()
        yield stripe
        await stripe.stop_webhooks()
        await asyncio.sleep(0)
    app.state.payment_providers = providers
