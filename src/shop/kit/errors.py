"""The error hierarchy and the one handler that renders every error as RFC 9457 problem+json
(documented in OpenAPI by ``shop.kit.docs``)."""

import copy
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Self

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shop.kit.observability import request_id

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"


class ShopError(Exception):
    """A refusal the client can act on. Subclasses fix the status and the stable ``code``."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"
    # True when the refusal comes from another request racing this one: it says nothing
    # about this request, which may be retried as it is (with the same Idempotency-Key).
    transient: ClassVar[bool] = False

    # Seconds after which the same request may succeed; sent as Retry-After when set.
    retry_after: int | None = None

    def __init__(
        self, detail: str | None = None, *, retry_after: int | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        if retry_after is not None:
            self.retry_after = retry_after

    def explained(self, detail: str, **extra: Any) -> Self:
        """The same refusal, told in the words of the operation that met it."""
        told = copy.copy(self)
        told.args, told.detail, told.extra = (detail,), detail, self.extra | extra
        return told

    def problem(self) -> dict[str, Any]:
        return problem_body(self.status, self.code, self.title, self.detail, **self.extra)

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def response(self) -> JSONResponse:
        headers = self.headers()
        return JSONResponse(
            self.problem(), status_code=self.status, media_type=PROBLEM_JSON, headers=headers
        )


class NotFound(ShopError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ShopError):
    status, code, title = 409, "conflict", "Conflict"


class ConcurrentUpdate(Conflict):
    code, title = "concurrent_update", "Changed by another request meanwhile; try again"
    transient = True


class Unprocessable(ShopError):
    status, code, title = 422, "unprocessable", "Unprocessable request"


class NotAuthenticated(ShopError):
    """401, with the challenge RFC 6750 asks for: a bearer token (``error="invalid_token"``
    when one was sent and refused)."""

    status, code, title = 401, "not_authenticated", "Not authenticated"
    challenge: ClassVar[str] = "Bearer"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": self.challenge}


class InvalidToken(NotAuthenticated):
    code, title = "invalid_token", "Invalid access token"
    challenge = 'Bearer error="invalid_token", error_description="The access token is invalid"'


class TokenExpired(NotAuthenticated):
    code, title = "token_expired", "Access token expired"
    challenge = 'Bearer error="invalid_token", error_description="The access token expired"'


class InvalidCredentials(NotAuthenticated):
    code, title = "invalid_credentials", "Incorrect email or password"


class Forbidden(ShopError):
    status, code, title = 403, "forbidden", "Forbidden"


class TooManyRequests(ShopError):
    status, code, title = 429, "too_many_requests", "Too many requests; slow down"


class Busy(ShopError):
    status, code, title = 503, "busy", "The service is busy; try again shortly"
    retry_after = 1


def problem_body(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if (rid := request_id()) is not None:
        body["request_id"] = rid  # the same id as on the response and in the logs
    body.update(jsonable_encoder(extra))
    return body


def problem_response(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = problem_body(status, code, title, detail, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


async def _shop_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ShopError)
    return exc.response()


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if invalid := next((e for e in errors if e["type"] == "json_invalid"), None):
        return _invalid_json(invalid, exc.body)
    sent = request.headers.get("content-type", "").split(";")[0].strip().lower()
    whole_body = any(tuple(e["loc"]) == ("body",) for e in errors)
    if whole_body and isinstance(exc.body, bytes | str) and exc.body and sent != JSON:
        # A JSON body sent without its Content-Type (curl's -d sends a form's).
        told = f"Content-Type {sent}" if sent else "no Content-Type"
        return problem_response(
            415,
            "json_expected",
            "Send the body as JSON",
            f"The body was sent with {told}; send it with Content-Type: {JSON} "
            "(curl: -H 'Content-Type: application/json')",
        )
    detail, fields = invalid_fields(errors)
    return problem_response(422, "validation_error", "Invalid request", detail, errors=fields)


def invalid_fields(errors: Sequence[Any]) -> tuple[str, list[dict[str, Any]]]:
    """Pydantic's errors as every 422 tells them: a detail naming each field by its path,
    and each field with where it came from (``loc`` starts with body, query or path)."""
    fields = [
        {
            "field": field_path(e["loc"]),
            "in": e["loc"][0] if e["loc"] else "body",
            "msg": _readable(e["msg"]),
            "type": e["type"],
            "loc": list(e["loc"]),
        }
        for e in errors
    ]
    detail = "; ".join(f"{f['field'] or f['in']}: {f['msg']}" for f in fields)
    return f"Invalid fields: {detail}", fields


def field_path(loc: Sequence[int | str]) -> str:
    """A field's path as a client writes it: ``items[0].quantity``, without where it came
    from (body, query, path), which the problem gives apart."""
    path = ""
    for part in loc[1:]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _readable(message: str) -> str:
    if "PydanticObjectId" in message:  # the type's own wording names a class
        return "Must be a 24-character hexadecimal id"
    return message.removeprefix("Value error, ")


def _invalid_json(error: Any, body: Any) -> JSONResponse:
    position = error["loc"][1] if len(error["loc"]) > 1 else 0
    where = f"at character {position + 1}"
    if isinstance(body, str | bytes):
        text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        where = f"at line {line}, column {column}"
    reason = error.get("ctx", {}).get("error", "not JSON")
    return problem_response(
        400, "invalid_json", "Malformed JSON", f"The body is not valid JSON: {reason} {where}"
    )


# Codes for the errors the framework raises. Fixed here: HTTPStatus's phrases changed between
# Python versions (413 and 422 among them), and a code must not.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "content_too_large",
    415: "unsupported_media_type",
}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    code = _HTTP_CODES.get(exc.status_code) or phrase.lower().replace(" ", "_").replace("-", "_")
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    response = problem_response(exc.status_code, code, phrase, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


class DatabaseUnavailable(ShopError):
    status, code, title = 503, "database_unavailable", "The database cannot be reached"
    retry_after = 5


def is_outage(exc: BaseException) -> bool:
    """The database could not be reached or did not answer in time: nothing the request did
    wrong, and worth retrying."""
    return isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_outage(exc):
        return await _unexpected_error(request, exc)
    return DatabaseUnavailable("The database did not answer in time; try again shortly").response()


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    return problem_response(500, "internal_error", "Internal server error", "Unexpected error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ShopError, _shop_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PyMongoError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
