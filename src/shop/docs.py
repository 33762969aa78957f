"""The API's description: its OpenAPI document, with every error as it really is
(problem+json), and /docs, served with the service's own Swagger UI files rather than from
a CDN, so it works on machines without internet access too."""

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from swagger_ui_bundle import swagger_ui_path

from shop.errors import PROBLEM_JSON, ShopError

STATIC = "/docs/static"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response is shaped."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


def responses(*errors: type[ShopError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route, from the errors it can raise."""
    documented: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = documented.setdefault(
            error.status,
            {"description": ""},
        )
        codes = f"`{error.code}`"
        entry["description"] = ", ".join(filter(None, [entry["description"], codes]))
    return documented


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with every error response as it really is: problem+json.

    Adds what every operation can answer besides its own errors: 422 for invalid input,
    400 for an unparsable body, 401 where a token is needed.
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            answers = operation.setdefault("responses", {})
            answers.setdefault("422", {"description": "`validation_error`"})
            if "requestBody" in operation:
                answers.setdefault("400", {"description": "`bad_request`: unparsable body"})
                answers.setdefault("413", {"description": "`content_too_large`"})
            if operation.get("security"):
                answers.setdefault(
                    "401", {"description": "`not_authenticated`, `invalid_token`, `token_expired`"}
                )
            for status, answer in answers.items():
                if int(status) >= 400:
                    answer["content"] = {PROBLEM_JSON: problem}
    app.openapi_schema = schema
    return schema


def install_docs(app: FastAPI) -> None:
    app.mount(STATIC, StaticFiles(directory=Path(str(swagger_ui_path))), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API docs",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
