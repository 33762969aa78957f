"""Many customers at once doing everything a shop allows, then the books must balance.

Stock: every unit is in stock, reserved by an unpaid order, or sold and not returned.
Money: what the provider charged minus what it refunded is what the paid orders keep.
"""

import asyncio
import json
import os
import random
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from bson import ObjectId
from fastapi import FastAPI
from httpx import AsyncClient

from shop.audit import audit
from shop.catalog.models import Product
from shop.discounts.models import DiscountKind, DiscountScope
from shop.kit.config import AppSettings
from shop.orders.models import Order, OrderStatus
from shop.payments.mock import ProviderCharge, ProviderRefund
from shop.payments.provider import ChargeStatus
from shop.returns.models import ReturnRequest, ReturnStatus
from tests.factories import (
    Account,
    add_to_cart,
    apply_code,
    make_discount,
    make_product,
    make_user,
    pay,
    request_return,
)

STOCK = 12
SIMULATED = ("mock", "pm_card_visa", "pm_card_chargeDeclined")


async def shopper(
    client: AsyncClient,
    account: Account,
    products: list[Product],
    seed: int,
    payment: tuple[str, str, str] = SIMULATED,  # the provider, a card, a declined card
) -> None:
    provider, card, declined = payment
    rng = random.Random(seed)
    for product in rng.sample(products, rng.randint(1, len(products))):
        await add_to_cart(client, account, product, rng.randint(1, 3))
    if rng.random() < 0.3:
        await apply_code(client, account, "SAVE5")
    created = await client.post("/order/create/", headers=account.headers)
    if created.status_code != 201:
        return
    order = created.json()
    action = rng.choice(["pay", "pay", "pay", "decline-then-pay", "cancel", "leave"])
    if action == "cancel":
        await client.post(f"/order/{order['id']}/cancel/", headers=account.headers)
        return
    if action == "leave":
        return
    if action == "decline-then-pay":
        await pay(client, account, order["id"], method=declined, provider=provider)
    paid = await pay(client, account, order["id"], method=card, provider=provider)
    if paid.status_code != 200 or rng.random() < 0.4:
        return
    lines = paid.json()["lines"]
    line = rng.choice(lines)
    by_id = {str(p.id): p for p in products}
    await asyncio.gather(  # a double-click on "return"
        *(
            request_return(
                client,
                account,
                order["id"],
                (by_id[line["product_id"]], rng.randint(1, line["quantity"])),
            )
            for _ in range(2)
        )
    )


async def test_stock_and_money_balance_after_a_busy_hour(client: AsyncClient, app: FastAPI) -> None:
    products = [await make_product(price=price, stock=STOCK) for price in ("9.99", "33.33", "0.10")]
    await make_discount(
        scope=DiscountScope.product,
        kind=DiscountKind.percent,
        value="15",
        product_ids=[products[1].id],
    )
    await make_discount(
        scope=DiscountScope.cart, kind=DiscountKind.fixed, value="5.00", code="SAVE5", usage_limit=4
    )
    customers = [await make_user(app) for _ in range(30)]
    await asyncio.gather(*(shopper(client, c, products, seed) for seed, c in enumerate(customers)))

    orders = await Order.find_all().to_list()
    statuses = Counter(o.status for o in orders)
    assert (
        statuses[OrderStatus.paid]
        + statuses[OrderStatus.partially_returned]
        + statuses[OrderStatus.returned]
        > 0
    ), statuses  # the run exercised payment
    for product in products:
        fresh = await Product.get(product.id)
        assert fresh is not None
        held = sum(
            line.quantity - line.returned_quantity
            for order in orders
            if order.status is not OrderStatus.cancelled
            for line in order.lines
            if line.product_id == product.id
        )
        assert fresh.stock >= 0
        assert fresh.stock + held == STOCK, (product.name, fresh.stock, held)

    charges = await ProviderCharge.find(ProviderCharge.status == ChargeStatus.succeeded).to_list()
    refunds = await ProviderRefund.find_all().to_list()
    kept = sum(
        (Decimal(o.total) - Decimal(o.refunded_total) for o in orders if o.payment), Decimal(0)
    )
    charged = sum((Decimal(c.amount) for c in charges), Decimal(0))
    refunded = sum((Decimal(r.amount) for r in refunds), Decimal(0))
    assert charged - refunded == kept
    # One charge per paid order, but none for a free one: nothing to charge.
    assert len(charges) == sum(1 for o in orders if o.payment and o.total > 0)
    for order in orders:
        if order.payment:
            assert order.payment.amount == order.total
        assert Decimal(order.refunded_total) <= Decimal(order.total)

    returns = await ReturnRequest.find_all().to_list()
    assert all(r.status is ReturnStatus.refunded for r in returns), [r.status for r in returns]
    assert sorted(r.key for r in refunds) == sorted(r.refund_key for r in returns)
    redeemed = sum(1 for o in orders if o.cart_discount and o.status is not OrderStatus.cancelled)
    assert redeemed <= 4
    assert await audit() == []  # the same books, as `shop audit` keeps them


async def busy_shop(client: AsyncClient, app: FastAPI) -> list[Product]:
    products = [await make_product(price=price, stock=STOCK) for price in ("9.99", "0.10")]
    customers = [await make_user(app) for _ in range(8)]
    await asyncio.gather(*(shopper(client, c, products, seed) for seed, c in enumerate(customers)))
    return products


async def test_the_audit_names_a_corrupted_stock_figure_and_a_stray_charge(
    client: AsyncClient, app: FastAPI
) -> None:
    products = await busy_shop(client, app)
    assert await audit() == []
    await Product.get_pymongo_collection().update_one(
        {"_id": products[0].id}, {"$inc": {"stock": 1}}
    )
    stray = ProviderCharge(
        key=f"order-{ObjectId()}-attempt-1",
        payment_id="ch_stray",
        amount=Decimal("5.00"),
        currency="EUR",
        method="pm_card_visa",
        status=ChargeStatus.succeeded,
    )
    await stray.insert()
    found = await audit()
    assert [(v.rule, v.subject) for v in found] == [
        ("stock", f"product {products[0].id}"),
        ("charge", "charge ch_stray"),
    ], found


@pytest.mark.slow
async def test_shop_audit_exits_non_zero_naming_each_violation(
    client: AsyncClient, app: FastAPI, base_settings: AppSettings
) -> None:
    products = await busy_shop(client, app)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {
        "SHOP_MONGODB_URL": str(base_settings.mongodb_url),
        "SHOP_DB_NAME": base_settings.db_name,
        "SHOP_DATA_DIR": str(base_settings.data_dir),
    }
    shop = [str(Path(sys.executable).parent / "shop"), "audit"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*shop, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False)

    balanced = await asyncio.to_thread(run)
    assert (balanced.returncode, balanced.stdout.strip()) == (0, "the books balance")

    await Product.get_pymongo_collection().update_one(
        {"_id": products[1].id}, {"$inc": {"stock": -2}}
    )
    broken = await asyncio.to_thread(run, "--json")
    assert broken.returncode == 1, broken.stderr
    report = json.loads(broken.stdout)
    assert report["ok"] is False
    assert [(v["rule"], v["subject"]) for v in report["violations"]] == [
        ("stock", f"product {products[1].id}")
    ]
