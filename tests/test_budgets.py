"""Deterministic performance budgets: database round trips per request, and index use.

The embedded server does about a thousand simple operations a second, so round trips are
what decide a request's speed; these budgets keep them from creeping up unnoticed. Each
pins the exact commands, so one more (an N+1 over cart or order lines, say) fails it, and
so does a command of a shape that grows with the collection: a ``findAndModify``, which the
embedded server writes through a scan of the whole collection, where the shop sends an
``update`` and a ``find`` by the document's key.
"""

from collections.abc import Awaitable
from datetime import timedelta

from bson import ObjectId
from fastapi import FastAPI
from httpx import AsyncClient, Response

from shop.cart.models import Cart
from shop.catalog.models import Product
from shop.discounts.models import DiscountKind, DiscountScope
from shop.kit.clock import ShiftedClock
from shop.orders.models import Order, OrderStatus
from shop.orders.service import sweep_overdue, sweep_unsettled_payments
from shop.returns.models import ReturnRequest, ReturnStatus
from tests.cart.test_guest import TOKEN, guest_add, merge, start_guest_cart
from tests.conftest import CommandLog
from tests.explain import plan_of
from tests.factories import (
    PASSWORD,
    Account,
    add_to_cart,
    apply_code,
    grow_first_line_elsewhere,
    make_discount,
    make_product,
    make_user,
    pay,
    place_order,
    request_return,
    set_stock,
    view_cart,
)


async def round_trips(db_commands: CommandLog, request: Awaitable[Response]) -> list[str]:
    db_commands.clear()
    response = await request
    assert response.status_code < 300, response.text
    return [f"{name} {collection}".strip() for name, collection in db_commands.commands]


CHECKOUT = [
    "find users",  # the account still exists (before the transaction)
    # The cart as this process last saw it, emptied if it is still in that state (its
    # revision); a concurrent change conflicts and retries the transaction.
    "update carts",
    "find products",
    "find discounts",
    "update products",  # every line's guarded reservation, in one command
    "insert orders",
    "insert pending_orders",
    "commitTransaction",
]
# The state of the cart this process last saw, changed, in an update conditional on its
# revision: the answer needs no read.
SEEN = ["update carts"]
CHANGED = ["update carts", "find carts"]  # a conditional update of the line, then the cart


async def test_cart_requests_cost_an_update_once_the_cart_was_seen(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product(stock=100)
    other = await make_product(stock=100)
    await add_to_cart(client, customer, other, 1)  # the catalog cache now holds `other`
    await add_to_cart(client, await make_user(app), product, 1)  # and `product`

    view = client.get("/cart/", headers=customer.headers)
    assert await round_trips(db_commands, view) == ["find carts"]
    more = add_to_cart(client, customer, other, 1)
    assert await round_trips(db_commands, more) == SEEN
    new_line = add_to_cart(client, customer, product, 1)
    assert await round_trips(db_commands, new_line) == SEEN
    some = client.delete(
        f"/cart/remove/?product_id={other.id}&quantity=1", headers=customer.headers
    )
    assert await round_trips(db_commands, some) == CHANGED
    line = client.delete(f"/cart/remove/?product_id={product.id}", headers=customer.headers)
    assert await round_trips(db_commands, line) == CHANGED
    # Taking off as much as the line holds removes it: the decrement misses, the pull lands.
    rest = client.delete(
        f"/cart/remove/?product_id={other.id}&quantity=1", headers=customer.headers
    )
    assert await round_trips(db_commands, rest) == ["update carts", *CHANGED]
    again = add_to_cart(client, customer, other, 2)  # the empty cart the remove read
    assert await round_trips(db_commands, again) == SEEN
    assert [(i.product_id, i.quantity) for i in (await Cart.of_user(customer.user.id)).items] == [
        (other.id, 2)
    ]


async def test_a_cart_changed_by_another_process_costs_the_missed_update_and_a_read(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product(stock=100)
    await add_to_cart(client, customer, product, 1)
    await grow_first_line_elsewhere(Cart.get_pymongo_collection(), customer.user.id, 2)

    after = add_to_cart(client, customer, product, 1)
    assert await round_trips(db_commands, after) == ["update carts", *CHANGED]
    next_one = add_to_cart(client, customer, product, 1)
    assert await round_trips(db_commands, next_one) == SEEN
    view = await view_cart(client, customer)
    assert [line["quantity"] for line in view["items"]] == [5]  # 1 + 2 elsewhere + 1 + 1


async def test_the_first_add_after_a_checkout_is_one_update(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    """Checkout leaves the emptied cart remembered once its transaction has committed."""
    product = await make_product(stock=100)
    await place_order(client, customer, (product, 2))
    after = add_to_cart(client, customer, product, 1)
    # The product again (its stock was reserved), then the remembered cart's one update.
    assert await round_trips(db_commands, after) == ["find products", *SEEN]
    assert [(i.product_id, i.quantity) for i in (await Cart.of_user(customer.id)).items] == [
        (product.id, 1)
    ]


async def test_a_refused_checkout_leaves_the_cart_as_this_process_saw_it(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product(stock=3)
    await add_to_cart(client, customer, product, 3)
    await set_stock(product, 1)
    refused = await client.post("/order/create/", headers=customer.headers)
    assert refused.status_code == 409, refused.text
    # Nothing was remembered from the aborted transaction: the cart is read, then changed.
    await set_stock(product, 10)
    more = add_to_cart(client, customer, product, 1)
    assert await round_trips(db_commands, more) == ["find products", *CHANGED]
    assert (await Cart.of_user(customer.id)).quantity_of(product.id) == 4


async def test_a_promo_code_costs_its_throttle_a_quote_and_the_cart(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    await add_to_cart(client, customer, await make_product(), 1)
    await make_discount(scope=DiscountScope.cart, kind=DiscountKind.percent, value="5", code="TEN")
    apply = client.post("/cart/discount/", json={"code": "TEN"}, headers=customer.headers)
    assert await round_trips(db_commands, apply) == [
        "update throttle",  # the attempt counted, its outcome recorded
        "find throttle",  # the outcome read back
        "find carts",
        "find products",
        "find discounts",  # judged on the database's figures
        "update throttle",  # a code that applies is given back
        *CHANGED,  # the code put on the cart; the quote reuses what was read above
    ]


async def test_a_cold_cache_costs_one_read_of_products_and_one_of_discounts(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, customer: Account
) -> None:
    await add_to_cart(client, customer, await make_product(), 1)
    app.state.catalog.forget("products", None)
    app.state.catalog.forget("discounts", None)
    view = client.get("/cart/", headers=customer.headers)
    assert await round_trips(db_commands, view) == ["find carts", "find products", "find discounts"]


async def test_a_per_customer_limit_costs_the_cart_one_read_of_the_customers_uses(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product()
    await make_discount(
        scope=DiscountScope.product,
        kind=DiscountKind.percent,
        value="10",
        product_ids=[product.id],
        per_user_limit=1,
    )
    await add_to_cart(client, customer, product, 1)
    view = client.get("/cart/", headers=customer.headers)
    assert await round_trips(db_commands, view) == ["find carts", "find discount_usage"]


async def test_checkout_costs_the_same_for_one_line_and_fifty(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog
) -> None:
    for lines in (1, 50):
        account = await make_user(app)
        for _ in range(lines):
            await add_to_cart(client, account, await make_product(stock=5), 1)
        checkout = client.post("/order/create/", headers=account.headers)
        assert await round_trips(db_commands, checkout) == CHECKOUT, lines


async def test_checkout_of_a_cart_changed_elsewhere_reads_it(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product(stock=10)
    await add_to_cart(client, customer, product, 1)
    await grow_first_line_elsewhere(Cart.get_pymongo_collection(), customer.user.id, 2)

    checkout = client.post("/order/create/", headers=customer.headers)
    missed = ["update carts", "find carts", "update carts"]  # the emptying misses, then reads
    assert await round_trips(db_commands, checkout) == [CHECKOUT[0], *missed, *CHECKOUT[2:]]
    order = await Order.find_one({"user_id": customer.user.id})
    assert order is not None
    assert [line.quantity for line in order.lines] == [3]  # what the cart held, not 1
    assert (await Cart.of_user(customer.user.id)).is_empty


async def test_payment_history_and_detail_budgets(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    order = await place_order(client, customer, (await make_product(), 1))
    assert await round_trips(db_commands, pay(client, customer, order["id"])) == [
        "insert idempotency_keys",  # the key, taken before anything runs
        "find users",  # the account still exists
        "update orders",  # the order claimed for this attempt, if payable
        "find orders",  # and read: only this attempt moves it now
        "insert mock_provider_charges",  # the provider's charge
        "update orders",  # paid
        "delete pending_orders",  # its payment window closed
        "update idempotency_keys",  # the outcome, kept for retries
    ]
    history = client.get("/order/history/", headers=customer.headers)
    assert await round_trips(db_commands, history) == [
        "find carts",  # how many orders the customer placed: the newest one's number
        "find orders",  # one range of numbers
    ]
    detail = client.get(f"/order/{order['id']}/", headers=customer.headers)
    assert await round_trips(db_commands, detail) == ["find orders"]


async def test_a_history_page_is_one_bounded_range_of_order_numbers(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    """The first page and a later one read one range each, whatever the history holds
    before or after it: no sort over all the customer's orders, no `$or`."""
    product = await make_product(stock=10)
    for _ in range(5):
        await place_order(client, customer, (product, 1))
    first = (await client.get("/order/history/?limit=2", headers=customer.headers)).json()
    later = client.get(
        f"/order/history/?limit=2&cursor={first['next_cursor']}", headers=customer.headers
    )
    assert await round_trips(db_commands, later) == ["find orders"]
    (command,) = db_commands.sent
    assert command["filter"]["number"] == {"$gte": 1, "$lt": 4}, command
    assert command["limit"] == 3


async def test_a_catalog_page_is_one_bounded_read(
    client: AsyncClient, db_commands: CommandLog
) -> None:
    for _ in range(30):
        await make_product()
    full = client.get("/products/?limit=4")
    assert await round_trips(db_commands, full) == ["find products"]
    (span,) = [c["filter"]["position"] for c in db_commands.sent]
    assert span == {"$gt": 0, "$lte": 7}  # the page and one more, and half a page for gaps
    # Deep in the catalog, a page is the same one bounded range.
    cursor = (await client.get("/products/?limit=12")).json()["next_cursor"]
    deep = client.get(f"/products/?limit=4&cursor={cursor}")
    assert await round_trips(db_commands, deep) == ["find products"]
    (span,) = [c["filter"]["position"] for c in db_commands.sent]
    assert span == {"$gt": 12, "$lte": 19}
    # A page that comes back short reads how far the catalog goes, then looks further.
    assert await round_trips(db_commands, client.get("/products/?limit=40")) == [
        "find products",
        "find sequences",
    ]


async def test_sign_in_and_refresh_budgets(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    form = {"username": customer.user.email, "password": PASSWORD}
    login = client.post("/auth/token", data=form)
    assert await round_trips(db_commands, login) == [
        "find throttle",  # is this address refused, for its failures across accounts?
        "update throttle",  # the attempt at this account from this address, counted
        "find throttle",  # and what it found
        "find users",
        "delete throttle",  # a success forgets that account's count at that address
        "insert refresh_tokens",
    ]
    refresh_token = (await client.post("/auth/token", data=form)).json()["refresh_token"]
    refresh = client.post("/auth/refresh", json={"refresh_token": refresh_token})
    assert await round_trips(db_commands, refresh) == [
        "find refresh_tokens",
        "find users",
        "insert refresh_tokens",  # the next token, stored before this one is spent
        "update refresh_tokens",  # spent, if nobody spent it first
    ]


async def test_hot_queries_use_indexes(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, customer: Account
) -> None:
    """Every query the history, the catalog and the sweeps (overdue orders, payments no
    webhook settled) really send is served by an index: the service's own commands,
    captured as they went out, are explained."""
    await place_order(client, customer, (await make_product(), 1))
    db_commands.clear()
    await client.get("/order/history/", headers=customer.headers)
    await client.get("/order/history/?status=paid", headers=customer.headers)
    await client.get("/products/")
    db_commands.sent = [c for c in db_commands.sent if c.get("find") != "sequences"]
    await sweep_overdue(app.state.payment_providers)
    await sweep_unsettled_payments(app.state.payment_providers, timedelta(seconds=30))
    finds = [c for c in db_commands.sent if "find" in c]
    assert [(c["find"], sorted(c["filter"])) for c in finds] == [
        ("carts", ["_id"]),
        ("orders", ["number", "user_id"]),
        ("carts", ["_id"]),
        ("orders", ["number", "status", "user_id"]),
        ("products", ["active", "position"]),
        ("orders", ["expires_at", "status"]),
        ("orders", ["payment_in_progress.started_at", "status"]),
    ]
    database = Order.get_pymongo_collection().database
    for command in finds:
        plan = await plan_of(database, command)
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, (command["find"], plan)


async def test_a_sale_costs_checkout_one_counted_redemption(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product(stock=10)
    await make_discount(
        scope=DiscountScope.product, kind=DiscountKind.percent, value="10", product_ids=[product.id]
    )
    await add_to_cart(client, customer, product, 1)
    checkout = await round_trips(
        db_commands, client.post("/order/create/", headers=customer.headers)
    )
    assert (
        checkout
        == [
            *CHECKOUT[:5],
            "update discounts",  # usage_limit bookkeeping; no per-user counter without a limit
            *CHECKOUT[5:],
        ]
    )


async def test_a_return_reads_its_order_once_before_the_refund(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    product = await make_product(stock=10)
    order = await place_order(client, customer, (product, 1))
    await pay(client, customer, order["id"])
    returned = request_return(client, customer, order["id"], (product, 1))
    assert await round_trips(db_commands, returned) == [
        "insert idempotency_keys",
        "find orders",  # the order, settled if its payment deadline passed; 404 for others'
        # The claim, in one transaction:
        "find users",
        "find orders",
        "update orders",  # the units claimed
        "insert returns",
        "commitTransaction",
        "update returns",  # approved
        # The simulated provider's refund (its own bookkeeping, in its own transaction):
        "find mock_provider_refunds",
        "find mock_provider_charges",
        "find mock_provider_refunds",
        "update mock_provider_charges",
        "insert mock_provider_refunds",
        "commitTransaction",
        # Settled, in one transaction: the return saved from the copy this process holds,
        # the order read and saved, the stock back.
        "update returns",
        "find orders",
        "update orders",
        "update products",
        "commitTransaction",
        "update idempotency_keys",
    ]
    refunded = await ReturnRequest.find_one({"order_id": ObjectId(order["id"])})
    assert refunded is not None and refunded.status is ReturnStatus.refunded
    stored = await Order.get(ObjectId(order["id"]))
    assert stored is not None and stored.status is OrderStatus.returned
    assert (await Product.get(product.id)).stock == 10


async def test_every_write_is_addressed_by_a_key(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, clock: ShiftedClock, admin: Account
) -> None:
    """Each update and delete the service sends names its document by ``_id`` or by the
    fields of a unique index, first and as plain values; nothing is a ``findAndModify``
    (but the one-document sequences). Both servers then touch that one document, however
    many others there are; the embedded server plans a write by its first indexed field,
    and scans the collection for a ``findAndModify`` or a top-level ``$and``/``$or``."""
    customer = await make_user(app)
    product = await make_product(stock=50)
    discount = await make_discount(
        scope=DiscountScope.cart, kind=DiscountKind.percent, value="5", code="FIVE"
    )
    db_commands.clear()
    await client.post("/auth/register", json={"email": "new@example.com", "password": PASSWORD})
    form = {"username": "new@example.com", "password": PASSWORD}
    tokens = (await client.post("/auth/token", data=form)).json()
    await client.post("/auth/token", data={**form, "password": "wrong password"})
    await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    await add_to_cart(client, customer, product, 2)
    await apply_code(client, customer, "FIVE")
    await client.delete(
        f"/cart/remove/?product_id={product.id}&quantity=1", headers=customer.headers
    )
    order = await place_order(client, customer, (product, 1))
    await pay(client, customer, order["id"])
    await request_return(client, customer, order["id"], (product, 1))
    cancelled = await place_order(client, customer, (product, 1))
    await client.post(f"/order/{cancelled['id']}/cancel/", headers=customer.headers)
    await place_order(client, customer, (product, 1))
    clock.advance(3600)
    await sweep_overdue(app.state.payment_providers)
    await client.patch(f"/products/{product.id}", json={"stock": 80}, headers=admin.headers)
    await client.patch(f"/discounts/{discount.id}", json={"value": "6"}, headers=admin.headers)
    await client.delete(f"/discounts/{discount.id}", headers=admin.headers)

    database = Order.get_pymongo_collection().database
    unique: dict[str, list[set[str]]] = {}
    writes = 0
    for command in db_commands.sent:
        name = next(iter(command))
        if name == "findAndModify":
            assert command[name] == "sequences", command
            continue
        if name not in ("update", "delete"):
            continue
        collection = command[name]
        if collection not in unique:
            indexes = (await database[collection].index_information()).values()
            unique[collection] = [{"_id"}] + [
                {field for field, _ in index["key"]} for index in indexes if index.get("unique")
            ]
        for statement in command["updates" if name == "update" else "deletes"]:
            writes += 1
            fields = list(statement["q"])
            assert not any(field.startswith("$") for field in fields), statement
            leading = [
                key
                for key in unique[collection]
                if set(fields[: len(key)]) == key
                and all(not isinstance(statement["q"][f], dict) for f in key)
            ]
            if statement.get("multi"):  # a family of refresh tokens, revoked together
                assert (collection, fields) == ("refresh_tokens", ["family"]), statement
                continue
            assert leading, (collection, statement["q"])
    assert writes > 30


async def test_a_merge_is_one_transaction_whatever_the_guest_cart_holds(
    client: AsyncClient, app: FastAPI, db_commands: CommandLog, customer: Account
) -> None:
    """The guest's cart read and ended, the customer's read and written once, whatever the
    number of lines (the products come from the catalog cache)."""
    products = [await make_product(stock=10) for _ in range(3)]
    token = await start_guest_cart(client, products[0], 1)
    for product in products[1:]:
        assert (await guest_add(client, product, 2, token)).status_code == 200
    merged = round_trips(db_commands, merge(client, customer, token))
    assert await merged == [
        "find guest_carts",
        "delete guest_carts",
        "find carts",
        "update carts",
        "commitTransaction",
    ]
    cart = await Cart.of_user(customer.id)
    assert [(i.product_id, i.quantity) for i in cart.items] == [
        (products[0].id, 1),
        (products[1].id, 2),
        (products[2].id, 2),
    ]


async def test_a_guest_cart_is_addressed_by_an_index_from_its_first_add_to_its_merge(
    client: AsyncClient, db_commands: CommandLog, customer: Account
) -> None:
    """Every command on guests' carts names the cart by its token's hash (unique), and its
    reads by the hash and the expiry, which one index holds; the merge deletes it by
    ``_id``. However many guests' carts there are, each touches one."""
    product = await make_product(stock=10)
    db_commands.clear()
    token = await start_guest_cart(client, product, 1)
    assert (await guest_add(client, product, 2, token)).status_code == 200
    assert (await client.get("/cart/", headers={TOKEN: token})).status_code == 200
    removed = await client.delete(
        f"/cart/remove/?product_id={product.id}&quantity=1", headers={TOKEN: token}
    )
    assert removed.status_code == 200, removed.text
    assert (await merge(client, customer, token)).status_code == 200
    sent = [c for c in db_commands.sent if next(iter(c.values())) == "guest_carts"]
    assert sorted({next(iter(c)) for c in sent}) == ["delete", "find", "insert", "update"]
    database = Order.get_pymongo_collection().database
    for command in sent:
        name = next(iter(command))
        if name == "find":
            assert sorted(command["filter"]) == ["expires_at", "guest"], command
            plan = await plan_of(database, command)
            assert "IXSCAN" in plan and "COLLSCAN" not in plan, plan
        for statement in command.get("updates", []) + command.get("deletes", []):
            first, value = next(iter(statement["q"].items()))
            assert first in ("guest", "_id") and not isinstance(value, dict), statement
