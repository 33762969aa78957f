"""/docs works offline, and the OpenAPI document behind it says what the API does."""

import json

from httpx import AsyncClient


async def test_docs_are_served_without_a_cdn(client: AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
        assert asset in page.text
        served = await client.get(asset)
        assert served.status_code == 200
        assert len(served.content) > 10_000
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert (
        schema["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"][
            "tokenUrl"
        ]
        == "/auth/token"
    )


async def test_every_schema_has_its_own_plain_name(client: AsyncClient) -> None:
    """Two models of one name show in /docs under their module paths (shop__cart__...)."""
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert not [name for name in schemas if "__" in name]


PUBLIC = {
    ("get", "/products/"),
    ("get", "/products/{product_id}"),
    ("post", "/auth/register"),
    ("post", "/auth/token"),
    ("post", "/auth/refresh"),
    ("post", "/auth/logout"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    # A guest's cart (X-Cart-Token), or the customer's with a bearer token.
    ("get", "/cart/"),
    ("post", "/cart/add/"),
    ("delete", "/cart/remove/"),
    ("post", "/cart/discount/"),
    ("delete", "/cart/discount/"),
    ("post", "/payments/stripe/webhook"),  # Stripe's, checked by its signature
    ("post", "/payments/mock/authenticate"),  # the browser's, with the payment's secret
}


async def test_the_openapi_document_is_worth_reading(client: AsyncClient) -> None:
    """Every operation has a written summary and a description, every tag a description,
    every object model a realistic example; ids say what they are; public routes need no
    token; Idempotency-Key is required where the route refuses to run without it."""
    schema = (await client.get("/openapi.json")).json()
    operations = [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]
    for method, path, operation in operations:
        generated = operation["operationId"].split("_" + path.strip("/").split("/")[0])[0]
        assert operation["summary"].lower() != generated.replace("_", " "), (method, path)
        assert operation.get("description"), (method, path)
        security = operation.get("security", [])
        if (method, path) in PUBLIC:
            assert not security or {} in security, (method, path)
            unauthorized = operation["responses"].get("401", {}).get("description", "")
            assert "not_authenticated" not in unauthorized, (method, path)
        else:
            assert security and {} not in security, (method, path)
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "Idempotency-Key":
                assert parameter["required"] is True, (method, path)
    keyed = {path for _, path, op in operations for p in op.get("parameters", [])
             if p["name"] == "Idempotency-Key"}  # fmt: skip
    assert keyed == {"/order/pay/", "/order/{order_id}/return/"}

    tags = {tag["name"]: tag.get("description") for tag in schema["tags"]}
    used = {tag for _, _, op in operations for tag in op.get("tags", [])}
    assert used <= set(tags) and all(tags.values()), tags

    components = schema["components"]["schemas"]
    assert "hexadecimal" in components["PydanticObjectId"]["description"]
    for name, model in components.items():
        if model.get("type") == "object":
            assert model.get("examples"), name
            assert '"text"' not in json.dumps(model["examples"]), name
    assert components["CartOut"]["examples"][0]["total"] == "22.50"  # money as a string
    login = components[
        schema["paths"]["/auth/token"]["post"]["requestBody"]["content"][
            "application/x-www-form-urlencoded"
        ]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert "email" in login["properties"]["username"]["description"]


async def test_the_front_page_is_the_docs(client: AsyncClient) -> None:
    home = await client.get("/")
    assert (home.status_code, home.headers["location"]) == (307, "/docs")
