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
from shop.kit.docs import responses
from shop.kit.errors import ConcurrentUpdate, Forbidden
from shop.kit.pagination import Cursor, InvalidCursor, Limit, Page, page_by_id

router = APIRouter(prefix="/discounts", tags=["discounts"])


def _out(discount: Discount) -> DiscountOut:
    return DiscountOut.model_validate(discount, from_attributes=True)


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    responses=responses(DiscountCodeTaken, Forbidden),
    summary="Create a discount (admin)",
)
async def create_discount(body: DiscountCreate, _: AdminUser) -> DiscountOut:
    """A product sale (`scope=product`, on `product_ids`) or a cart discount, automatic or
    behind a `code`; `percent` off, or a `fixed` amount."""
    return _out(await Discount.define(body))


@router.get("/", responses=responses(InvalidCursor, Forbidden), summary="List discounts (admin)")
async def list_discounts(
    _: AdminUser,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[DiscountOut]:
    """Every discount, active or not, a page at a time."""
    return (await page_by_id(Discount, {}, limit, cursor)).shaped(_out)


@router.get(
    "/{discount_id}",
    responses=responses(DiscountNotFound, Forbidden),
    summary="One discount (admin)",
)
async def get_discount(discount_id: PydanticObjectId, _: AdminUser) -> DiscountOut:
    """A discount with how often it was used."""
    discount = await Discount.get(discount_id)
    if discount is None:
        raise DiscountNotFound()
    return _out(discount)


@router.patch(
    "/{discount_id}",
    responses=responses(DiscountNotFound, InvalidDiscount, ConcurrentUpdate, Forbidden),
    summary="Change a discount (admin)",
)
async def update_discount(
    discount_id: PydanticObjectId, body: DiscountUpdate, _: AdminUser
) -> DiscountOut:
    """Change a discount. Orders already placed keep the discount as it was."""
    return _out(await Discount.update_fields(discount_id, body.model_dump(exclude_unset=True)))


@router.delete(
    "/{discount_id}",
    responses=responses(DiscountNotFound, Forbidden),
    summary="Deactivate a discount (admin)",
)
async def deactivate_discount(discount_id: PydanticObjectId, _: AdminUser) -> DiscountOut:
    """Deactivate: it no longer applies to carts; placed orders keep it."""
    return _out(await Discount.deactivate(discount_id))
