"""The simulated provider keeps its own books and is idempotent, like a real one."""

import asyncio
from decimal import Decimal

import pytest

from shop.payments.mock import MockProvider, ProviderCharge, ProviderRefund
from shop.payments.provider import (
    ChargeStatus,
    InsufficientFunds,
    RefundExceedsCharge,
    RefundFailed,
    UnknownPaymentMethod,
)


async def test_concurrent_charges_with_one_key_charge_once() -> None:
    provider = MockProvider()
    charges = await asyncio.gather(
        *(
            provider.charge(key="k1", amount=Decimal("9.99"), currency="EUR", method="pm_card_visa")
            for _ in range(10)
        )
    )
    assert len({c.payment_id for c in charges}) == 1
    assert await ProviderCharge.count() == 1
    assert await provider.retrieve("k1") == charges[0]
    assert await provider.retrieve("other") is None


async def test_declines_are_recorded_and_raised_as_their_kind() -> None:
    provider = MockProvider()
    charge = await provider.charge(
        key="k2",
        amount=Decimal("1.00"),
        currency="EUR",
        method="pm_card_chargeDeclinedInsufficientFunds",
    )
    assert (charge.status, charge.failure_code) == (ChargeStatus.failed, "insufficient_funds")
    with pytest.raises(InsufficientFunds):
        charge.raise_if_failed()
    with pytest.raises(UnknownPaymentMethod):
        provider.check_method("pm_card_amex_from_the_future")


async def test_refunds_are_idempotent_and_never_exceed_the_charge() -> None:
    provider = MockProvider()
    charge = await provider.charge(
        key="k3", amount=Decimal("10.00"), currency="EUR", method="pm_card_visa"
    )
    same_key = await asyncio.gather(
        *(
            provider.refund(key="r1", payment_id=charge.payment_id, amount=Decimal("6.00"))
            for _ in range(5)
        )
    )
    assert len({r.refund_id for r in same_key}) == 1
    with pytest.raises(RefundExceedsCharge):
        await provider.refund(key="r2", payment_id=charge.payment_id, amount=Decimal("4.01"))
    await provider.refund(key="r3", payment_id=charge.payment_id, amount=Decimal("4.00"))
    booked = await ProviderCharge.find_one(ProviderCharge.payment_id == charge.payment_id)
    assert booked is not None
    assert booked.amount_refunded == Decimal("10.00")
    assert sorted(r.amount for r in await ProviderRefund.find_all().to_list()) == [
        Decimal("4.00"),
        Decimal("6.00"),
    ]
    with pytest.raises(RefundFailed):
        await provider.refund(key="r4", payment_id="ch_unknown", amount=Decimal("1.00"))


async def test_a_zero_amount_charge_can_be_refunded() -> None:
    """A fully discounted order is charged 0.00; returning it refunds 0.00, not an error."""
    provider = MockProvider()
    charge = await provider.charge(
        key="k4", amount=Decimal("0.00"), currency="EUR", method="pm_card_visa"
    )
    refund = await provider.refund(key="r5", payment_id=charge.payment_id, amount=Decimal("0.00"))
    assert refund.amount == Decimal("0.00")
    assert await ProviderRefund.count() == 1
