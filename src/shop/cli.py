"""``shop serve``: run the API, starting the embedded database when no URL is configured."""

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import uvicorn

from shop.config import AppSettings
from shop.embedded import EmbeddedMongo, Supervisor, running_url
from shop.server import DeadlineHttpToolsProtocol


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API")
    serve.add_argument("--host", help="default: SHOP_HOST, else 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: SHOP_PORT, else 8000")
    serve.add_argument("--workers", type=int, help="default: SHOP_WORKERS, else 1")
    serve.add_argument("--demo-data", action="store_true", help="same as SHOP_DEMO_DATA=true")
    audit = commands.add_parser(
        "audit", help="check the books over the whole database; exit 1 naming every violation"
    )
    audit.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    if args.command == "audit":
        sys.exit(_audit(AppSettings(), as_json=args.json))

    if args.demo_data:
        os.environ["SHOP_DEMO_DATA"] = "true"
    settings = AppSettings()
    _share_metrics(settings.data_dir.resolve() / "metrics")
    # Imported only now: prometheus-client picks its multiprocess mode when first imported.
    from shop.observability import configure_logging

    configure_logging(settings.effective_log_format, settings.log_level)
    args.host = args.host or settings.host
    args.port = args.port or settings.port
    args.workers = args.workers or settings.workers
    settings.signing_key()  # a development key is made once, before any worker starts
    if settings.mongodb_url is not None:
        _serve(args)
        return
    # One embedded database for all workers; they find it through the environment. It is
    # restarted if it exits; if it cannot be, the shop stops and exits non-zero.
    database = EmbeddedMongo(settings.data_dir.resolve() / "db")
    supervisor = Supervisor(database, give_up=lambda: os.kill(os.getpid(), signal.SIGTERM))
    # uvicorn re-raises SIGTERM after its shutdown; turn it into an exit so the embedded
    # database is stopped cleanly too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(_GAVE_UP if supervisor.failed else 0))
    try:
        database.start()
        logging.getLogger("shop").info("embedded database at %s", database.url)
        os.environ["SHOP_MONGODB_URL"] = database.url
        supervisor.start()
        _serve(args)
    finally:
        supervisor.stop()
        database.stop()
    if supervisor.failed:
        sys.exit(_GAVE_UP)


def _share_metrics(directory: Path) -> None:
    """Workers write their metrics to files in ``directory`` (emptied here, before any
    starts), so that /metrics adds up every worker's figures."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return  # the operator chose where
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _audit(settings: AppSettings, *, as_json: bool) -> int:
    """The books of the configured database; or of the embedded one in the data directory,
    through the running ``shop serve`` when there is one, else started for the audit."""
    if settings.mongodb_url is not None:
        return asyncio.run(_print_audit(settings.mongodb_url, settings, as_json))
    storage = settings.data_dir.resolve() / "db"
    if (url := running_url(storage)) is not None:
        return asyncio.run(_print_audit(url, settings, as_json))
    with EmbeddedMongo(storage) as database:
        return asyncio.run(_print_audit(database.url, settings, as_json))


async def _print_audit(url: str, settings: AppSettings, as_json: bool) -> int:
    from shop.audit import audit
    from shop.db import connect, init_database
    from shop.main import DOCUMENTS

    client = connect(url, selection_timeout=settings.db_selection_timeout_seconds)
    try:
        await init_database(client, settings.db_name, DOCUMENTS, build_indexes=False)
        violations = await audit()
    finally:
        await client.close()
    if as_json:
        print(json.dumps({"ok": not violations, "violations": [v.as_dict() for v in violations]}))
    else:
        for violation in violations:
            print(violation)
        print(f"{len(violations)} violation(s)" if violations else "the books balance")
    return 1 if violations else 0


_GAVE_UP = "shop: the embedded database stopped and could not be restarted; see the log above"


def _serve(args: argparse.Namespace) -> None:
    uvicorn.run(
        "shop.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        # uvloop and httptools (uvicorn[standard]) take less CPU per request than asyncio and
        # h11. uvloop also sets TCP_NODELAY on every connection; asyncio does not on the socket
        # uvicorn binds for several workers, and each answer then waited ~40 ms for an ACK.
        loop="uvloop",
        http=DeadlineHttpToolsProtocol,  # httptools, with a deadline to send a request
        server_header=False,  # no version for scanners
        log_config=None,  # the logging configured above, one format for every line
        access_log=False,  # each request's line is written by shop.observability
    )


if __name__ == "__main__":
    main()
