from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shop.clock import utcnow
from shop.deps import AdminUser
from shop.discounts.models import Discount, DiscountNotFound
from shop.discounts.schemas import (
    DiscountCreate,
    DiscountFields,
    DiscountOut,
    DiscountPage,
    DiscountUpdate,
)
from shop.documents import page_by_id, to_bson
from shop.errors import Conflict, Forbidden, responses

router = APIRouter(prefix="/discounts", tags=["discounts"])


class DiscountCodeTaken(Conflict):
    code, title = "discount_code_taken", "Another discount has this code"


def _out(discount: Discount) -> DiscountOut:
    return DiscountOut.model_validate(discount, from_attributes=True)


async def _get(discount_id: PydanticObjectId) -> Discount:
    discount = await Discount.get(discount_id)
    if discount is None:
        raise DiscountNotFound()
    return discount


@router.post(
    "/", status_code=status.HTTP_201_CREATED, responses=responses(DiscountCodeTaken, Forbidden)
)
async def create_discount(body: DiscountCreate, _: AdminUser) -> DiscountOut:
    discount = Discount(**body.model_dump())
    try:
        await discount.insert()
    except DuplicateKeyError:
        raise DiscountCodeTaken(f"{body.code} is taken") from None
    return _out(discount)


@router.get("/", responses=responses(Forbidden))
async def list_discounts(
    _: AdminUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: PydanticObjectId | None = None,
) -> DiscountPage:
    page, next_cursor = await page_by_id(Discount, {}, limit, cursor)
    return DiscountPage(items=[_out(d) for d in page], next_cursor=next_cursor)


@router.get("/{discount_id}", responses=responses(DiscountNotFound, Forbidden))
async def get_discount(discount_id: PydanticObjectId, _: AdminUser) -> DiscountOut:
    return _out(await _get(discount_id))


@router.patch("/{discount_id}", responses=responses(DiscountNotFound, Forbidden))
async def update_discount(
    discount_id: PydanticObjectId, body: DiscountUpdate, _: AdminUser
) -> DiscountOut:
    """Change a discount. Orders already placed keep the discount as it was."""
    discount = await _get(discount_id)
    changes = body.model_dump(exclude_unset=True)
    current = {name: getattr(discount, name) for name in DiscountFields.model_fields}
    try:
        DiscountFields.model_validate(current | changes)
    except ValidationError as invalid:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in invalid.errors(include_context=False)]
        ) from None
    raw = await Discount.get_pymongo_collection().find_one_and_update(
        {"_id": discount_id},
        {"$set": to_bson(changes) | {"updated_at": utcnow()}},
        return_document=ReturnDocument.AFTER,
    )
    if raw is None:
        raise DiscountNotFound()
    return _out(Discount.model_validate(raw))


@router.delete("/{discount_id}", responses=responses(DiscountNotFound, Forbidden))
async def deactivate_discount(discount_id: PydanticObjectId, _: AdminUser) -> DiscountOut:
    """Deactivate: it no longer applies to carts; placed orders keep it."""
    raw = await Discount.get_pymongo_collection().find_one_and_update(
        {"_id": discount_id},
        {"$set": {"active": False, "updated_at": utcnow()}},
        return_document=ReturnDocument.AFTER,
    )
    if raw is None:
        raise DiscountNotFound()
    return _out(Discount.model_validate(raw))
