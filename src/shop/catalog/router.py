from typing import Annotated

from beanie import PydanticObjectId
from fastapi import APIRouter, Query, status

from shop.catalog.models import Product
from shop.catalog.schemas import ProductCreate, ProductOut, ProductPage, ProductUpdate
from shop.deps import AdminUser, OptionalUser
from shop.documents import page_by_id
from shop.errors import Forbidden, NotFound, responses

router = APIRouter(prefix="/products", tags=["catalog"])


class ProductNotFound(NotFound):
    code, title = "product_not_found", "Product not found"


def _out(product: Product) -> ProductOut:
    return ProductOut.model_validate(product, from_attributes=True)


async def _get(product_id: PydanticObjectId, *, include_inactive: bool) -> Product:
    product = await Product.get(product_id)
    if product is None or not (product.active or include_inactive):
        raise ProductNotFound()
    return product


@router.get("/")
async def list_products(
    user: OptionalUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: PydanticObjectId | None = None,
) -> ProductPage:
    """Products in a stable order, a page at a time. Customers see active products only."""
    query: dict[str, object] = {} if user and user.is_admin else {"active": True}
    page, next_cursor = await page_by_id(Product, query, limit, cursor)
    return ProductPage(items=[_out(p) for p in page], next_cursor=next_cursor)


@router.get("/{product_id}", responses=responses(ProductNotFound))
async def get_product(product_id: PydanticObjectId, user: OptionalUser) -> ProductOut:
    return _out(await _get(product_id, include_inactive=bool(user and user.is_admin)))


@router.post("/", status_code=status.HTTP_201_CREATED, responses=responses(Forbidden))
async def create_product(body: ProductCreate, _: AdminUser) -> ProductOut:
    product = Product(**body.model_dump())
    await product.insert()
    return _out(product)


@router.patch("/{product_id}", responses=responses(ProductNotFound, Forbidden))
async def update_product(
    product_id: PydanticObjectId, body: ProductUpdate, _: AdminUser
) -> ProductOut:
    product = await Product.update_fields(product_id, body.model_dump(exclude_none=True))
    if product is None:
        raise ProductNotFound()
    return _out(product)


@router.delete("/{product_id}", responses=responses(ProductNotFound, Forbidden))
async def deactivate_product(product_id: PydanticObjectId, _: AdminUser) -> ProductOut:
    """Deactivate: the product leaves the catalog, orders keep their history."""
    product = await Product.update_fields(product_id, {"active": False})
    if product is None:
        raise ProductNotFound()
    return _out(product)
