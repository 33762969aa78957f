from beanie import PydanticObjectId
from fastapi import APIRouter, status

from shop.catalog.models import Product, ProductNotFound
from shop.catalog.schemas import ProductCreate, ProductOut, ProductUpdate
from shop.deps import AdminUser, OptionalUser
from shop.docs import responses
from shop.errors import Forbidden
from shop.pagination import Cursor, InvalidCursor, Limit, Page, page_by_id

router = APIRouter(prefix="/products", tags=["catalog"])


def _out(product: Product) -> ProductOut:
    return ProductOut.model_validate(product, from_attributes=True)


@router.get("/", responses=responses(InvalidCursor))
async def list_products(
    user: OptionalUser,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[ProductOut]:
    """Products in a stable order, a page at a time. Customers see active products only."""
    query = Product.visible_query(admin=bool(user and user.is_admin))
    return (await page_by_id(Product, query, limit, cursor)).shaped(_out)


@router.get("/{product_id}", responses=responses(ProductNotFound))
async def get_product(product_id: PydanticObjectId, user: OptionalUser) -> ProductOut:
    admin = bool(user and user.is_admin)
    return _out(Product.visible_or_raise(await Product.get(product_id), admin))


@router.post("/", status_code=status.HTTP_201_CREATED, responses=responses(Forbidden))
async def create_product(body: ProductCreate, _: AdminUser) -> ProductOut:
    product = Product(**body.model_dump())
    await product.insert()
    return _out(product)


@router.patch("/{product_id}", responses=responses(ProductNotFound, Forbidden))
async def update_product(
    product_id: PydanticObjectId, body: ProductUpdate, _: AdminUser
) -> ProductOut:
    return _out(await Product.update_fields(product_id, body.model_dump(exclude_none=True)))


@router.delete("/{product_id}", responses=responses(ProductNotFound, Forbidden))
async def deactivate_product(product_id: PydanticObjectId, _: AdminUser) -> ProductOut:
    """Deactivate: the product leaves the catalog, orders keep their history."""
    return _out(await Product.update_fields(product_id, {"active": False}))
