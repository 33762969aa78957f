from beanie import PydanticObjectId
from fastapi import APIRouter, status

from shop.catalog.models import Product, ProductNotFound
from shop.catalog.schemas import ProductCreate, ProductOut, ProductUpdate
from shop.deps import OPTIONAL_TOKEN, AdminUser, OptionalUser
from shop.kit.docs import responses
from shop.kit.errors import Forbidden
from shop.kit.pagination import Cursor, InvalidCursor, Limit, Page

router = APIRouter(prefix="/products", tags=["catalog"])


def _out(product: Product) -> ProductOut:
    return ProductOut.model_validate(product, from_attributes=True)


@router.get(
    "/",
    openapi_extra=OPTIONAL_TOKEN,
    responses=responses(InvalidCursor),
    summary="Browse the catalog",
)
async def list_products(
    user: OptionalUser,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[ProductOut]:
    """Products in a stable order, a page at a time. Customers see active products only."""
    return (await Product.page(bool(user and user.is_admin), limit, cursor)).shaped(_out)


@router.get(
    "/{product_id}",
    openapi_extra=OPTIONAL_TOKEN,
    responses=responses(ProductNotFound),
    summary="One product",
)
async def get_product(product_id: PydanticObjectId, user: OptionalUser) -> ProductOut:
    """Customers see active products only (a withdrawn one is 404); admins see every product."""
    admin = bool(user and user.is_admin)
    return _out(Product.visible_or_raise(await Product.get(product_id), admin))


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    responses=responses(Forbidden),
    summary="Add a product (admin)",
)
async def create_product(body: ProductCreate, _: AdminUser) -> ProductOut:
    """A new product, active by default. Prices are exact decimal strings (`"12.50"`)."""
    product = Product(**body.model_dump())
    await product.insert()
    return _out(product)


@router.patch(
    "/{product_id}",
    responses=responses(ProductNotFound, Forbidden),
    summary="Change a product (admin)",
)
async def update_product(
    product_id: PydanticObjectId, body: ProductUpdate, _: AdminUser
) -> ProductOut:
    """Only the fields given change. A new `stock` is counted as received, for the books."""
    return _out(await Product.update_fields(product_id, body.model_dump(exclude_none=True)))


@router.delete(
    "/{product_id}",
    responses=responses(ProductNotFound, Forbidden),
    summary="Withdraw a product (admin)",
)
async def deactivate_product(product_id: PydanticObjectId, _: AdminUser) -> ProductOut:
    """Deactivate: the product leaves the catalog, orders keep their history."""
    return _out(await Product.update_fields(product_id, {"active": False}))
