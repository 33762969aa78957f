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
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from shop.kit.errors import PROBLEM_JSON, ShopError

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
    """The OpenAPI document as the API really behaves.

    Every error is problem+json, and every operation lists what any operation can answer
    besides its own errors: 422 for invalid input (where there is input), 400 for an
    unparsable body, 415 for a JSON body sent as something else, 401 where a token is
    required. Ids are described as what they are, the ``Idempotency-Key`` header
    is marked required where it is, a route that works with or without a token says so,
    and every object schema gets an example, built from its fields' examples.
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["PydanticObjectId"] = {
        "type": "string",
        "pattern": "^[0-9a-f]{24}$",
        "description": "A 24-character hexadecimal id",
        "examples": [EXAMPLE_ID],
    }
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "Idempotency-Key":
                    parameter["required"] = True  # refused with 400 without it
                    parameter["schema"] = {"type": "string", "minLength": 1, "maxLength": 255}
                    parameter["example"] = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
            answers = operation.setdefault("responses", {})
            if operation.get("parameters") or "requestBody" in operation:
                answers.setdefault("422", {"description": "`validation_error`"})
            else:  # takes no input: nothing of it can be invalid
                answers.pop("422", None)
            if "requestBody" in operation:
                answers.setdefault("400", {"description": "`invalid_json`: unparsable body"})
                answers.setdefault("413", {"description": "`content_too_large`"})
                if "application/json" in operation["requestBody"].get("content", {}):
                    answers.setdefault(
                        "415", {"description": "`json_expected`: sent without its Content-Type"}
                    )
            security = operation.get("security", [])
            if security and {} not in security:
                answers.setdefault(
                    "401", {"description": "`not_authenticated`, `invalid_token`, `token_expired`"}
                )
            for status, answer in answers.items():
                if int(status) >= 400:
                    answer["content"] = {PROBLEM_JSON: problem}
    for model in components.values():
        if model.get("type") == "object" and "examples" not in model:
            model["examples"] = [_example(model, components)]
    app.openapi_schema = schema
    return schema


EXAMPLE_ID = "6b0b40343079af398e056a8e"
EXAMPLE_TIME = "2026-11-28T12:00:00Z"


# Examples for string fields that declare none, by the field's name.
_BY_NAME = {
    "name": "Enamel mug",
    "description": "Camp mug, 350 ml, white with a blue rim.",
    "email": "ann@example.com",
    "username": "ann@example.com",
    "password": "correct horse battery",
    "currency": "EUR",
    "code": "WELCOME10",
    "provider": "mock",
    "method": "pm_card_visa",
    "payment_method": "pm_card_visa",
    "payment_id": "ch_5f2b1c0e9a7d4e3b2a1c0d9e",
    "reason": "no_longer_needed",
    "note": "Too small after all",
    "next_cursor": "MTc5NTkwMTc1MDAwMDo2YjBiNDAzNDMwNzlhZjM5OGUwNTZhOGU=",
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI2YjBi...",
    "refresh_token": "Qm9yZWQ_c2VjcmV0LXJlZnJlc2gtdG9rZW4tZXhhbXBsZQ",
    "type": "/problems/order_already_paid",
    "title": "Order already paid",
    "detail": "Order already paid",
    "request_id": "9f0c4a1e2b3d4c5e6f708192a3b4c5d6",
    "grant_type": "password",
    "client_id": "",
    "client_secret": "",
    "sku": "demo-mug",
}


def _example(
    node: dict[str, Any], components: dict[str, Any], depth: int = 0, name: str = ""
) -> Any:
    """An example value for a schema: its own example, else one built from its parts."""
    for key in ("examples", "example"):
        if key in node:
            return node[key][0] if key == "examples" else node[key]
    if "$ref" in node:
        return _example(components[node["$ref"].rsplit("/", 1)[1]], components, depth, name)
    if depth > 6:
        return None
    for union in ("anyOf", "oneOf", "allOf"):
        if union in node:
            options = [o for o in node[union] if o.get("type") != "null"]
            return _example(options[0], components, depth, name) if options else None
    if "enum" in node:
        return node["enum"][0]
    if "default" in node and node["default"] is not None:
        return node["default"]
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        return {key: _example(p, components, depth + 1, key) for key, p in properties.items()}
    if kind == "array":
        return [_example(node.get("items", {}), components, depth + 1, name)]
    if node.get("format") == "date-time":
        return EXAMPLE_TIME
    if node.get("format") == "email":
        return "ann@example.com"
    if kind == "string" or kind is None:
        return _BY_NAME.get(name, name or "text")
    return {"integer": 1, "number": 1, "boolean": True}.get(str(kind), "text")


class _StaticFilesRoute:
    """What the request log and the metrics read of a route: its path template."""

    path = f"{STATIC}/{{path}}"


def _named_for_the_log(files: ASGIApp) -> ASGIApp:
    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = _StaticFilesRoute  # not "unmatched": a mount has no route of its own
        await files(scope, receive, send)

    return serve


def install_docs(app: FastAPI) -> None:
    files = StaticFiles(directory=Path(str(swagger_ui_path)))
    app.mount(STATIC, _named_for_the_log(files), name="swagger-ui")

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
