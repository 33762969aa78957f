"""A small demo catalog, created when the shop has no products yet, with a discount of each
kind so that pricing shows: the code WELCOME10 (10% off the cart, once per customer), 5.00 off
any cart of 60.00 or more, and 20% off the wool socks."""

from decimal import Decimal

from bson import Decimal128

from shop.catalog.models import CATALOG, Product
from shop.discounts.models import Discount, DiscountKind, DiscountScope
from shop.kit.clock import utcnow
from shop.kit.documents import Sequence

DEMO_PRODUCTS = [
    ("demo-mug", "Enamel mug", "Camp mug, 350 ml, white with a blue rim.", "12.50", 40),
    ("demo-tee", "Organic T-shirt", "Heavy cotton tee, unisex cut.", "24.90", 25),
    ("demo-notebook", "Dot-grid notebook", "A5, 160 pages, lay-flat binding.", "9.99", 60),
    ("demo-bottle", "Steel bottle", "Insulated, 750 ml, keeps cold for 24 h.", "29.00", 15),
    ("demo-socks", "Wool socks", "Merino blend, pair.", "14.00", 30),
    ("demo-tote", "Canvas tote", "Sturdy canvas bag with inner pocket.", "18.75", 20),
]


async def create_demo_catalog() -> int:
    """Insert the demo products and discounts if the catalog is empty. Safe when several
    workers race."""
    if await Product.find_one() is not None:
        return 0
    created = 0
    for sku, name, description, price, stock in DEMO_PRODUCTS:
        now = utcnow()
        result = await Product.get_pymongo_collection().update_one(
            {"sku": sku},
            {
                "$setOnInsert": {
                    "name": name,
                    "description": description,
                    "price": Decimal128(Decimal(price)),
                    "stock": stock,
                    "received": stock,
                    "active": True,
                    "created_at": now,
                    "updated_at": now,
                    # A position that a lost race leaves unused is a gap the catalog skips.
                    "position": await Sequence.take(CATALOG),
                }
            },
            upsert=True,
        )
        created += result.upserted_id is not None
    await _create_demo_discounts()
    return created


async def _create_demo_discounts() -> None:
    socks = await Product.get_pymongo_collection().find_one({"sku": "demo-socks"})
    discounts: list[dict[str, object]] = [
        {
            "name": "Welcome: 10% off your first order",
            "scope": DiscountScope.cart.value,
            "kind": DiscountKind.percent.value,
            "value": Decimal128("10"),
            "code": "WELCOME10",
            "per_user_limit": 1,
        },
        {
            "name": "5.00 off carts of 60.00 or more",
            "scope": DiscountScope.cart.value,
            "kind": DiscountKind.fixed.value,
            "value": Decimal128("5.00"),
            "min_subtotal": Decimal128("60.00"),
        },
        {
            "name": "Wool socks: 20% off",
            "scope": DiscountScope.product.value,
            "kind": DiscountKind.percent.value,
            "value": Decimal128("20"),
            "product_ids": [socks["_id"]] if socks else [],
        },
    ]
    now = utcnow()
    for discount in discounts:
        defaults: dict[str, object] = {"product_ids": [], "code": None, "times_used": 0}
        defaults["active"] = True
        await Discount.get_pymongo_collection().update_one(
            {"name": discount["name"]},
            {"$setOnInsert": {**defaults, **discount, "created_at": now, "updated_at": now}},
            upsert=True,
        )
