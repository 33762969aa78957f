from beanie import PydanticObjectId
from fastapi import APIRouter, status

from shop.deps import AdminUser
from shop.discounts.models import (
    Discount,
    DiscountCodeTaken,
    DiscountNotFound,
    InvalidDiscount,
)
from shop.discounts.schemas import DiscountCreate, DiscountOut, DiscountUpdate
from shop.docs import responses
from shop.errors import ConcurrentUpdate, Forbidden
from shop.pagination import Cursor, InvalidCursor, Limit, Page, page_by_id

router = APIRouter(prefix="/discounts", tags=["discounts"])


def _out(discount: Discount) -> DiscountOut:
    return DiscountOut.model_validate(discount, from_attributes=True)


@router.post(
    "/", status_code=status.HTTP_201_CREATED, responses=responses(DiscountCodeTaken, Forbidden)
)
async def create_discount(body: DiscountCreate, _: AdminUser) -> DiscountOut:
    return _out(await Discount.define(body))


@router.get("/", responses=responses(InvalidCursor, Forbidden))
async def list_discounts(
    _: AdminUser,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[DiscountOut]:
    return (await page_by_id(Discount, {}, limit, cursor)).shaped(_out)


@router.get("/{discount_id}", responses=responses(DiscountNotFound, Forbidden))
async def get_discount(discount_id: PydanticObjectId, _: AdminUser) -> DiscountOut:
    discount = await Discount.get(discount_id)
    if discount is None:
        raise DiscountNotFound()
    return _out(discount)


@router.patch(
    "/{discount_id}",
    responses=responses(DiscountNotFound, InvalidDiscount, ConcurrentUpdate, Forbidden),
)
async def update_discount(
    discount_id: PydanticObjectId, body: DiscountUpdate, _: AdminUser
) -> DiscountOut:
    """Change a discount. Orders already placed keep the discount as it was."""
    return _out(await Discount.update_fields(discount_id, body.model_dump(exclude_unset=True)))


@router.delete("/{discount_id}", responses=responses(DiscountNotFound, Forbidden))
async def deactivate_discount(discount_id: PydanticObjectId, _: AdminUser) -> DiscountOut:
    """Deactivate: it no longer applies to carts; placed orders keep it."""
    return _out(await Discount.deactivate(discount_id))
