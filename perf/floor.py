"""The floor: the least a FastAPI + PyMongo service can do for the shop's two hot cart requests.

`POST /cart/add/` is one findAndModify (upsert, `$inc` of the line) and `GET /cart/` one find.
No authentication (the caller names its cart in `X-User`), no pricing, no validation beyond
the body model. `make perf` runs it beside the shop, each on a database server of its own
started on the same state, with the same client options and write concern, so the shop's
figures can be read as a ratio of what the stack and the database allow at best.

    SHOP_MONGODB_URL=... uvicorn perf.floor:app
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header
from pydantic import BaseModel
from pymongo import ReturnDocument

from shop.kit.config import AppSettings
from shop.kit.db import connect

# The shop's own client, made by the shop's own `connect` with the shop's settings: every write
# acknowledged once it is in the journal of a majority, reads from the primary, the same
# server-selection and operation timeouts; the URL carries the rest (perf/run.py gives both the
# same one, retryable writes included).
_settings = AppSettings()
_client = connect(
    _settings.mongodb_url or "mongodb://127.0.0.1:27017/?directConnection=true",
    selection_timeout=_settings.db_selection_timeout_seconds,
    timeout=_settings.db_timeout_seconds,
)
carts = _client[_settings.db_name]["carts"]


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
