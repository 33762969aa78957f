"""For the machines around the service: liveness, readiness, metrics. No token needed, never
throttled."""

import pymongo
from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pymongo.errors import PyMongoError

from shop.kit.docs import responses
from shop.kit.errors import DatabaseUnavailable
from shop.kit.metrics import render

router = APIRouter(tags=["operations"])

# How long readiness waits for the database: a load balancer's probe is short.
READY_TIMEOUT_SECONDS = 2.0


@router.get("/", include_in_schema=False)
async def home() -> RedirectResponse:
    """The interactive docs are the front page."""
    return RedirectResponse("/docs")


@router.get("/health", summary="Is the process alive")
async def health() -> dict[str, str]:
    """The process answers; no I/O. For a liveness probe: restart the process when this fails."""
    return {"status": "ok"}


@router.get("/ready", summary="Can it serve now", responses=responses(DatabaseUnavailable))
async def ready(request: Request) -> dict[str, str]:
    """The database answers a ping within 2 s: 200, else 503 ``database_unavailable``. For a
    readiness probe: send no traffic here while this fails."""
    client = request.app.state.mongo
    try:
        with pymongo.timeout(READY_TIMEOUT_SECONDS):
            await client.admin.command("ping")
    except PyMongoError:
        raise DatabaseUnavailable("The database does not answer") from None
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Counters and histograms in the Prometheus text format, summed over every worker."""
    body, content_type = render()
    return Response(body, media_type=content_type)
