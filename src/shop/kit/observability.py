"""What an operator sees of each request: an id, one log line, and its metrics.

Every request gets an id: the caller's ``X-Request-ID`` when it is a sane token, a new one
otherwise. It is echoed on the response, put in problem+json bodies and in every log line
written while the request runs. When the request ends, one line says what it was (method,
route template, status, duration, user) and the HTTP metrics count it. Nothing from the
body, the query string or the headers is logged, so no password, token or key can leak.
"""

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shop.kit import metrics

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

log = logging.getLogger("shop.http")


@dataclass
class RequestInfo:
    id: str
    user_id: str | None = None


_current: ContextVar[RequestInfo | None] = ContextVar("request", default=None)


def request_id() -> str | None:
    info = _current.get()
    return None if info is None else info.id


def identify_user(user_id: object) -> None:
    """The authenticated caller, for the request's log line."""
    if (info := _current.get()) is not None:
        info.user_id = str(user_id)


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        info = RequestInfo(given if _SANE_ID.match(given) else uuid.uuid4().hex)
        token = _current.set(info)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", info.id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            metrics.observe_request(method, route, status, seconds)
            log.info(
                "%s %s %d %.1f ms",
                method,
                route,
                status,
                seconds * 1000,
                extra={
                    "fields": {
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 1),
                        "user_id": info.user_id,
                        "client": scope["client"][0] if scope.get("client") else None,
                    }
                },
            )
            _current.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, and the
    record's ``fields`` (passed as ``extra={"fields": {...}}``)."""

    converter = time.gmtime  # type: ignore[assignment]  # UTC, as the Z says

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (rid := request_id()) is not None:
            entry["request_id"] = rid
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]  # UTC, as the Z says

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id()
        return line if rid is None else f"{line} [{rid}]"


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """Every logger, uvicorn's included, writing through one handler in one format (a
    ``logging.config.dictConfig``; uvicorn applies it again in each worker process)."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"shop": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "shop": {
                "class": "logging.StreamHandler",
                "formatter": "shop",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["shop"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # The request's own line (RequestLog) replaces uvicorn's access log.
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
    }
