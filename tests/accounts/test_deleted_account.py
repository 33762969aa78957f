"""An account that no longer exists moves no money: its access token, still valid for a
few minutes, neither orders, nor pays, nor returns."""

from httpx import AsyncClient

from shop.orders.models import Order, OrderStatus
from shop.payments.mock import ProviderCharge, ProviderRefund
from shop.returns.models import ReturnRequest
from tests.factories import (
    Account,
    assert_problem,
    make_paid_order,
    make_product,
    pay,
    place_order,
    request_return,
    stock_of,
)


async def test_a_deleted_account_cannot_pay(client: AsyncClient, customer: Account) -> None:
    product = await make_product(stock=5)
    order = await place_order(client, customer, (product, 2))
    await customer.user.delete()
    assert_problem(await pay(client, customer, order["id"]), 401, "account_not_found")
    assert await ProviderCharge.count() == 0
    unpaid = await Order.get(order["id"])
    assert unpaid is not None and unpaid.status is OrderStatus.pending_payment
    assert unpaid.payment_in_progress is None


async def test_a_deleted_account_cannot_return(client: AsyncClient, customer: Account) -> None:
    product = await make_product(stock=5)
    order = await make_paid_order(client, customer, (product, 2))
    await customer.user.delete()
    refused = await request_return(client, customer, order["id"], (product, 1))
    assert_problem(refused, 401, "account_not_found")
    assert await ReturnRequest.count() == 0
    assert await ProviderRefund.count() == 0
    assert await stock_of(product) == 3
