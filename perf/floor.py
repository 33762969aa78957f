"""The floor: the least a FastAPI + PyMongo service can do for the shop's two hot cart requests.

`POST /cart/add/` is one findAndModify (upsert, `$inc` of the line) and `GET /cart/` one find.
No authentication (the caller names its cart in `X-User`), no pricing, no validation beyond
the body model. `make perf` runs it beside the shop, each on a database server of its own
started on the same state, with the same client options and write concern, so the shop's
figures can be read as a ratio of what the stack and the database allow at best.

    SHOP_MONGODB_URL=... uvicorn perf.floor:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header
from pydantic import BaseModel
from pymongo import AsyncMongoClient, ReturnDocument

# The shop's own client options (shop/kit/db.py `connect`): every write acknowledged once it is in
# the journal of a majority, reads from the primary; the URL carries the rest (perf/run.py
# gives both the same one, retryable writes included).
_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
    os.environ.get("SHOP_MONGODB_URL", "mongodb://127.0.0.1:27017/?directConnection=true"),
    w="majority",
    journal=True,
    readPreference="primary",
)
carts = _client[os.environ.get("SHOP_DB_NAME", "floor")]["carts"]


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await _client.close()


app = FastAPI(lifespan=lifespan)


class AddToCart(BaseModel):
    product_id: str
    quantity: int = 1


@app.post("/cart/add/")
async def add(body: AddToCart, x_user: Annotated[str, Header()]) -> dict[str, Any]:
    cart = await carts.find_one_and_update(
        {"_id": x_user},
        {"$inc": {f"items.{body.product_id}": body.quantity}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    return {"items": cart["items"] if cart else {}}


@app.get("/cart/")
async def view(x_user: Annotated[str, Header()]) -> dict[str, Any]:
    cart = await carts.find_one({"_id": x_user})
    return {"items": cart["items"] if cart else {}}
