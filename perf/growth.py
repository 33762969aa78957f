"""`make perf`'s growth part: what one customer's requests cost as the shop's data grows.

For each level (none, 1,000, 10,000, 100,000) a fresh `shop serve` starts on its own embedded
database, exactly as `make run` does. Other customers' carts, orders, returns, idempotency
keys, throttle keys, refresh tokens, accounts, provider charges and refunds, and products,
are then inserted directly, `level` of each, as the shop itself would have written them (and,
at every level, 50 products, so that every catalog page is full). One customer then goes
through every hot request one at a time, `samples` times; the table gives each request's
median.

    .venv/bin/python perf/growth.py [--levels 0,1000,10000,100000] [--samples 15]
"""

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bson import Decimal128, ObjectId
from pymongo import MongoClient

from shop.kit.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN_EMAIL = "growth-admin@example.com"
ADMIN_PASSWORD = "growth-admin-password"
PASSWORD = "growth-password-1"
BATCH = 5_000

# The hot requests, in the order one journey makes them.
REQUESTS = [
    "catalog, first page",
    "catalog, deep page",
    "add to cart",
    "view cart",
    "apply a code",
    "remove from cart",
    "checkout",
    "pay",
    "order detail",
    "history",
    "return",
    "login",
    "refresh",
]


@contextlib.contextmanager
def shop(data_dir: Path, log: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """`shop serve` on its embedded database: the API's address, the database's, and the
    process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {
        "SHOP_DATA_DIR": str(data_dir),
        "SHOP_DEMO_DATA": "true",
        "SHOP_ADMIN_EMAIL": ADMIN_EMAIL,
        "SHOP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SHOP_LOG_LEVEL": "warning",
        # A request that takes seconds is measured, not cut off at the default 10 s.
        "SHOP_DB_TIMEOUT_SECONDS": "120",
    }
    command = [sys.executable, "-c", "from shop.cli import main; main()", "serve"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"shop serve exited with {process.returncode}: see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/products/?limit=1", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("shop serve did not come up")
            time.sleep(0.3)
        database = json.loads((data_dir / "db.pid").read_text())
        yield base, f"mongodb://127.0.0.1:{database['port']}/?directConnection=true", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


# -- seeding: documents as the shop writes them ------------------------------------------------


def money(text: str) -> Decimal128:
    return Decimal128(text)


def order_document(user: ObjectId, product: ObjectId, at: datetime, status: str) -> dict[str, Any]:
    line = {
        "product_id": product,
        "name": "Seeded product",
        "unit_price": money("9.99"),
        "quantity": 2,
        "line_subtotal": money("19.98"),
        "discount": money("0.00"),
        "discount_id": None,
        "line_total": money("19.98"),
        "cart_discount_share": money("0.00"),
        "net_total": money("19.98"),
        "claimed_quantity": 0,
        "claimed_amount": money("0.00"),
        "returned_quantity": 0,
        "refunded_amount": money("0.00"),
    }
    paid = status != "pending_payment"
    return {
        "user_id": user,
        "lines": [line],
        "subtotal": money("19.98"),
        "cart_discount": None,
        "total": money("19.98"),
        "currency": "EUR",
        "status": status,
        "status_history": [{"status": "pending_payment", "at": at, "reason": None}]
        + ([{"status": "paid", "at": at, "reason": None}] if paid else []),
        "created_at": at,
        # Pending ones are still payable: they stay out of the sweeper's way.
        "expires_at": at + timedelta(minutes=30 if paid else 600),
        "paid_at": at if paid else None,
        "payment": {
            "provider": "mock",
            "payment_id": f"ch_{secrets.token_hex(8)}",
            "amount": money("19.98"),
            "method": "pm_card_visa",
            "paid_at": at,
            "request_key": str(uuid.uuid4()),
        }
        if paid
        else None,
        "payment_attempts": int(paid),
        "payment_in_progress": None,
        "refunded_total": money("0.00"),
        "redeemed_discounts": [],
        "version": 2 if paid else 0,
    }


# Products at every level, the empty one included, so that every catalog page is full.
BASE_CATALOG = 50


def seed(database_url: str, level: int, products: list[str]) -> float:
    """``level`` of every collection that grows with the business; returns seconds taken."""
    started = time.monotonic()
    now = datetime.now(UTC)
    client: MongoClient[dict[str, Any]] = MongoClient(database_url, tz_aware=True)
    db = client["shop"]
    seed_products(db, BASE_CATALOG, now, withdrawn=False)
    if level == 0:
        client.close()
        return time.monotonic() - started
    some_product = ObjectId(products[0])

    def insert(collection: str, make: Callable[[int], dict[str, Any]]) -> None:
        for start in range(0, level, BATCH):
            db[collection].insert_many(
                [make(i) for i in range(start, min(level, start + BATCH))], ordered=False
            )

    users = [ObjectId() for _ in range(level)]
    insert(
        "users",
        lambda i: {
            "_id": users[i],
            "email": f"seeded-{i}@example.com",
            "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$seeded$seeded",
            "role": "customer",
            "created_at": now,
            "credentials_version": 0,
        },
    )
    insert(
        "carts",
        lambda i: {
            "_id": users[i],  # a customer's cart is keyed by their id
            "user_id": users[i],
            "items": [{"product_id": some_product, "quantity": 1 + i % 3, "added_at": now}],
            "discount_code": None,
            "updated_at": now,
            "orders_placed": 1,  # the order below
        },
    )
    orders = [ObjectId() for _ in range(level)]
    statuses = ("paid", "paid", "paid", "cancelled", "pending_payment")
    insert(
        "orders",
        lambda i: {
            "_id": orders[i],
            "number": 1,  # each seeded customer's first
            **order_document(
                users[i], some_product, now - timedelta(seconds=i), statuses[i % len(statuses)]
            ),
        },
    )
    pending = [i for i in range(level) if statuses[i % len(statuses)] == "pending_payment"]
    if pending:
        db["pending_orders"].insert_many(
            [
                {"_id": orders[i], "user_id": users[i], "expires_at": now + timedelta(minutes=600)}
                for i in pending
            ],
            ordered=False,
        )
    insert(
        "returns",
        lambda i: {
            "order_id": orders[i],
            "user_id": users[i],
            "items": [
                {
                    "product_id": some_product,
                    "quantity": 1,
                    "reason": "no_longer_needed",
                    "refund_amount": money("9.99"),
                }
            ],
            "note": None,
            "status": "refunded",
            "status_history": [],
            "refund_amount": money("9.99"),
            "refund": None,
            "created_at": now,
            "updated_at": now,
            "version": 3,
        },
    )
    insert(
        "idempotency_keys",
        lambda i: {
            "user_id": users[i],
            "operation": "order.pay",
            "key": str(uuid.uuid4()),
            "fingerprint": secrets.token_hex(32),
            "state": "done",
            "status_code": 200,
            "body": {"id": str(orders[i]), "status": "paid"},
            "created_at": now,
            "started_at": now,
            "expires_at": now + timedelta(hours=24),
        },
    )
    insert(
        "throttle",
        lambda i: {
            "key": f"login-address:10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
            if i % 2
            else f"login-account:seeded-{i}@example.com",
            "attempts": 1,
            "blocked_until": None,
            "was_blocked_until": None,
            "expires_at": now + timedelta(hours=1),
        },
    )
    insert(
        "refresh_tokens",
        lambda i: {
            "token_hash": secrets.token_hex(32),
            "user_id": users[i],
            "family": secrets.token_hex(16),
            "credentials_version": 0,
            "used_at": None,
            "revoked": False,
            "expires_at": now + timedelta(days=30),
        },
    )
    insert(
        "mock_provider_charges",
        lambda i: {
            "key": f"order-{orders[i]}-attempt-1",
            "payment_id": f"ch_seeded_{i}",
            "amount": money("19.98"),
            "amount_refunded": money("9.99"),
            "currency": "EUR",
            "method": "pm_card_visa",
            "status": "succeeded",
            "failure_code": None,
            "created_at": now,
        },
    )
    insert(
        "mock_provider_refunds",
        lambda i: {
            "key": f"return-seeded-{i}",
            "refund_id": f"re_seeded_{i}",
            "payment_id": f"ch_seeded_{i}",
            "amount": money("9.99"),
            "created_at": now,
        },
    )
    seed_products(db, level, now)
    client.close()
    return time.monotonic() - started


def seed_products(db: Any, level: int, now: datetime, *, withdrawn: bool = True) -> None:
    """Products as the admin API creates them, some withdrawn as in a real catalog."""
    for start in range(0, level, BATCH):
        batch = [
            {
                "name": f"Seeded product {i}",
                "description": "",
                "price": money("4.99"),
                "stock": 1_000,
                "received": 1_000,
                "active": not withdrawn or i % 10 != 0,
                "sku": None,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(level, start + BATCH))
        ]
        insert_products(db, batch)


def insert_products(db: Any, products: list[dict[str, Any]]) -> list[str]:
    """Insert products, each with the next catalog position, as the shop hands them out
    (where the shop under test has positions: it keeps them in the `sequences` collection)."""
    sequence = db["sequences"].find_one_and_update(
        {"_id": "catalog"}, {"$inc": {"value": len(products)}}, return_document=True
    )
    if sequence is not None:
        first = sequence["value"] - len(products) + 1
        for offset, product in enumerate(products):
            product["position"] = first + offset
    return [str(i) for i in db["products"].insert_many(products, ordered=False).inserted_ids]


# -- one customer, one request at a time ----------------------------------------------------


class Customer:
    def __init__(self, http: httpx.Client, email: str) -> None:
        self.http = http
        self.email = email
        self.tokens = self._login()

    def _login(self) -> dict[str, Any]:
        answer = self.http.post("/auth/token", data={"username": self.email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        tokens: dict[str, Any] = answer.json()
        return tokens

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}


def measure(base: str, database_url: str, samples: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in REQUESTS}
    with httpx.Client(base_url=base, timeout=60) as http:
        admin = http.post("/auth/token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        admin_headers = {"Authorization": f"Bearer {admin.json()['access_token']}"}
        catalog = http.get("/products/?limit=100").json()["items"]
        for product in catalog[:2]:
            http.patch(f"/products/{product['id']}", json={"stock": 10**9}, headers=admin_headers)
        first, second = catalog[0]["id"], catalog[1]["id"]
        code = f"GROW{secrets.token_hex(3).upper()}"
        defined = http.post(
            "/discounts/",
            json={"name": "Growth", "scope": "cart", "kind": "percent", "value": "5", "code": code},
            headers=admin_headers,
        )
        assert defined.status_code == 201, defined.text
        email = f"growth-{secrets.token_hex(4)}@example.com"
        registered = http.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        me = Customer(http, email)
        client: MongoClient[dict[str, Any]]
        with MongoClient(database_url) as client:
            products = client["shop"]["products"]
            deep = deep_cursor(client["shop"], max(1, products.count_documents({}) // 2))

        def timed(name: str, send: Callable[[], httpx.Response], expect: int = 200) -> Any:
            started = time.perf_counter()
            answer = send()
            timings[name].append((time.perf_counter() - started) * 1000)
            assert answer.status_code == expect, f"{name}: {answer.status_code} {answer.text}"
            return answer.json() if answer.content else None

        for _ in range(samples):
            journey(me, timed, first, second, code, deep)
    return timings


def journey(
    me: "Customer", timed: Callable[..., Any], first: str, second: str, code: str, deep: str
) -> None:
    """One pass through every hot request, each timed on its own."""
    http, h = me.http, me.headers
    timed("catalog, first page", lambda: http.get("/products/?limit=20"))
    timed("catalog, deep page", lambda: http.get(f"/products/?limit=20&{deep}"))
    body = {"product_id": first, "quantity": 2}
    timed("add to cart", lambda: http.post("/cart/add/", json=body, headers=h))
    http.post("/cart/add/", json={"product_id": second, "quantity": 1}, headers=h)
    timed("view cart", lambda: http.get("/cart/", headers=h))
    timed("apply a code", lambda: http.post("/cart/discount/", json={"code": code}, headers=h))
    timed("remove from cart", lambda: http.delete(f"/cart/remove/?product_id={second}", headers=h))
    order = timed("checkout", lambda: http.post("/order/create/", headers=h), 201)
    pay = {"order_id": order["id"], "provider": "mock", "payment_method": "pm_card_visa"}
    paying = {**h, "Idempotency-Key": str(uuid.uuid4())}
    timed("pay", lambda: http.post("/order/pay/", json=pay, headers=paying))
    timed("order detail", lambda: http.get(f"/order/{order['id']}/", headers=h))
    timed("history", lambda: http.get("/order/history/", headers=h))
    back = {"items": [{"product_id": first, "quantity": 1, "reason": "no_longer_needed"}]}
    returning = {**h, "Idempotency-Key": str(uuid.uuid4())}
    url = f"/order/{order['id']}/return/"
    timed("return", lambda: http.post(url, json=back, headers=returning), 201)
    form = {"username": me.email, "password": PASSWORD}
    timed("login", lambda: http.post("/auth/token", data=form))
    spent = {"refresh_token": me.tokens["refresh_token"]}
    me.tokens = timed("refresh", lambda: http.post("/auth/refresh", json=spent))


def deep_cursor(db: Any, position: int) -> str:
    """The catalog's own cursor ``position`` products in, as a query string (walking there a
    page at a time would take as long as the whole measurement)."""
    from beanie import PydanticObjectId

    from shop.kit.pagination import encode_cursor

    (before,) = (
        db["products"]
        .find({}, {"_id": 1, "position": 1})
        .sort("_id", 1)
        .skip(position - 1)
        .limit(1)
    )
    key = before.get("position", PydanticObjectId(before["_id"]))
    return str(httpx.QueryParams({"cursor": encode_cursor(key)}))


def run(levels: list[int], samples: int, out: Path) -> list[dict[str, Any]]:
    rows = []
    for level in levels:
        with tempfile.TemporaryDirectory(prefix="shop-growth-") as tmp:
            with shop(Path(tmp), out / f"growth-{level}.log") as (base, database_url, _):
                products = [p["id"] for p in httpx.get(f"{base}/products/?limit=2").json()["items"]]
                seeded = seed(database_url, level, products)
                timings = measure(base, database_url, samples)
            medians = {name: statistics.median(values) for name, values in timings.items()}
            rows.append({"level": level, "seed_seconds": seeded, "medians": medians})
            print(f"level {level:,}: seeded in {seeded:.0f} s; " + json.dumps(medians), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    header = "| request | " + " | ".join(f"{r['level']:,}" for r in rows) + " | last / none |"
    lines = [header, "|---" * (len(rows) + 2) + "|"]
    for name in REQUESTS:
        values = [r["medians"][name] for r in rows]
        ratio = values[-1] / values[0] if values[0] else float("nan")
        marker = "" if ratio <= 1.5 else " ✗"
        lines.append(
            f"| {name} | "
            + " | ".join(f"{v:.1f}" for v in values)
            + f" | **{ratio:.2f}**{marker} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="0,1000,10000,100000")
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="growth-")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run([int(x) for x in args.levels.split(",")], args.samples, args.out)
    (args.out / "growth.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
