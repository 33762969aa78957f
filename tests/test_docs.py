"""/docs works offline: its Swagger UI files come from the service itself."""

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
