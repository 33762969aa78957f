"""``shop serve`` runs the API, starting the embedded database when no URL is configured;
``shop create-admin`` makes an admin account; ``shop audit`` checks the books."""

import argparse
import asyncio
import contextlib
import fcntl
import getpass
import json
import logging
import logging.config
import os
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from shop.kit.config import DEV_ADMIN_EMAIL, AppSettings
from shop.kit.embedded import EmbeddedMongo, Supervisor, running_url
from shop.kit.server import DeadlineHttpToolsProtocol


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
    create_admin = commands.add_parser(
        "create-admin", help="create an admin account, or make an account admin"
    )
    create_admin.add_argument("email")
    create_admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    args = parser.parse_args(argv)
    if args.command == "audit":
        sys.exit(_with_database(AppSettings(), _print_audit, as_json=args.json))
    if args.command == "create-admin":
        password = _read_password(from_stdin=args.password_stdin)
        sys.exit(_with_database(AppSettings(), _create_admin, email=args.email, password=password))

    if args.demo_data:
        os.environ["SHOP_DEMO_DATA"] = "true"
    settings = AppSettings()
    # Before anything shared is touched (the metrics files, the announcement): a second
    # start on the same data directory goes no further.
    with _claim(settings.data_dir.resolve()):
        _serve_from(args, settings)


def _serve_from(args: argparse.Namespace, settings: AppSettings) -> None:
    args.workers = args.workers or settings.workers
    if args.workers > 1:
        _share_metrics(settings.data_dir.resolve() / "metrics")
    # Imported only now: prometheus-client picks its multiprocess mode when first imported.
    from shop.kit.observability import logging_config

    log_config = logging_config(settings.effective_log_format, settings.log_level)
    logging.config.dictConfig(log_config)
    args.host = args.host or settings.host
    args.port = args.port or settings.port
    settings.signing_key()  # a development key is made once, before any worker starts
    # Workers read their settings from the environment: the address too, for their logs.
    os.environ["SHOP_HOST"], os.environ["SHOP_PORT"] = args.host, str(args.port)
    _announce(settings, args.host, args.port)
    if settings.mongodb_url is not None:
        _serve(args, log_config)
        return
    # One embedded database for all workers; they find it through the environment. It is
    # restarted if it exits; if it cannot be, the shop stops and exits non-zero.
    database = EmbeddedMongo(settings.data_dir.resolve() / "db")
    supervisor = Supervisor(database, give_up=lambda: os.kill(os.getpid(), signal.SIGTERM))
    # uvicorn re-raises SIGTERM after its shutdown; turn it into an exit so the embedded
    # database is stopped cleanly too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(_GAVE_UP if supervisor.failed else 0))
    try:
        try:
            database.start()
        except RuntimeError as cannot:  # not installed, or the data directory is in use
            sys.exit(f"shop: {cannot}")
        logging.getLogger("shop").info("embedded database at %s", database.url)
        os.environ["SHOP_MONGODB_URL"] = database.url
        supervisor.start()
        _serve(args, log_config)
    finally:
        supervisor.stop()
        database.stop()
    if supervisor.failed:
        sys.exit(_GAVE_UP)


@contextlib.contextmanager
def _claim(data_dir: Path) -> Iterator[None]:
    """Hold the data directory while this ``shop serve`` runs, or exit saying who holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(data_dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        sys.exit(
            f"shop: another shop serve is already running on {data_dir}; stop it first "
            "(README: Stopping the service), or give this one SHOP_DATA_DIR of its own"
        )
    try:
        yield
    finally:
        os.close(lock)


def _share_metrics(directory: Path) -> None:
    """Several workers write their metrics to files in ``directory`` (emptied here, before
    any starts), so that /metrics adds up every worker's figures. One worker keeps them in
    memory: each update to a file takes a lock and asks for the process id, 2% of a cart
    view's instructions."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return  # the operator chose where
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _announce(settings: AppSettings, host: str, port: int) -> None:
    """Where the API will answer, and in development the admin's credentials: on standard
    output, for the person who started it (never in the log)."""
    base = f"http://{host}:{port}"
    print(f"shop: starting; the API will answer at {base}/ and its docs at {base}/docs", flush=True)
    if settings.dev_admin:
        password = settings.dev_admin_password()
        print(f"shop: development admin {DEV_ADMIN_EMAIL}, password {password}", flush=True)


def _with_database(
    settings: AppSettings, work: Callable[..., Coroutine[Any, Any, int]], **options: Any
) -> int:
    """Run ``work`` on the configured database; or on the embedded one in the data directory,
    through the running ``shop serve`` when there is one, else started for the while."""
    if settings.mongodb_url is not None:
        return asyncio.run(work(settings.mongodb_url, settings, **options))
    storage = settings.data_dir.resolve() / "db"
    if (url := running_url(storage)) is not None:
        return asyncio.run(work(url, settings, **options))
    with EmbeddedMongo(storage) as database:
        return asyncio.run(work(database.url, settings, **options))


async def _connected(url: str, settings: AppSettings, build_indexes: bool) -> Any:
    from shop.kit.db import connect, init_database
    from shop.main import DOCUMENTS

    client = connect(url, selection_timeout=settings.db_selection_timeout_seconds)
    await init_database(client, settings.db_name, DOCUMENTS, build_indexes=build_indexes)
    return client


async def _print_audit(url: str, settings: AppSettings, *, as_json: bool) -> int:
    from shop.audit import audit
    from shop.main import payment_providers
    from shop.payments.stripe_provider import StripeProvider

    client = await _connected(url, settings, build_indexes=False)
    stripe = payment_providers(settings).get("stripe")
    try:
        violations = await audit(stripe if isinstance(stripe, StripeProvider) else None)
    finally:
        await client.close()
    if as_json:
        print(json.dumps({"ok": not violations, "violations": [v.as_dict() for v in violations]}))
    else:
        for violation in violations:
            print(violation)
        print(f"{len(violations)} violation(s)" if violations else "the books balance")
    return 1 if violations else 0


def _read_password(*, from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password (8 characters at least): ")
    if len(password) < 8:
        sys.exit("shop: the password must have 8 characters at least")
    return password


async def _create_admin(url: str, settings: AppSettings, *, email: str, password: str) -> int:
    from shop.accounts.security import PasswordHashing
    from shop.accounts.service import ensure_admin

    client = await _connected(url, settings, build_indexes=True)
    try:
        await ensure_admin(email, password, PasswordHashing(settings.password_hash_concurrency))
    finally:
        await client.close()
    print(f"shop: {email.strip().lower()} is an admin; log in with that email as the username")
    return 0


_GAVE_UP = "shop: the embedded database stopped and could not be restarted; see the log above"


# How `shop serve` runs uvicorn (the tests serve the app the same way).
SERVER_OPTIONS: dict[str, Any] = {
    # uvloop and httptools (uvicorn[standard]) take less CPU per request than asyncio and
    # h11. uvloop also sets TCP_NODELAY on every connection; asyncio does not on the socket
    # uvicorn binds for several workers, and each answer then waited ~40 ms for an ACK.
    "loop": "uvloop",
    "http": DeadlineHttpToolsProtocol,  # httptools, with a deadline to send a request
    "server_header": False,  # no version for scanners
    "access_log": False,  # each request's line is written by shop.kit.observability
    # The client's address is the application's to work out (shop.kit.client_address), from
    # SHOP_TRUSTED_PROXIES only: uvicorn's own default believes X-Forwarded-For from
    # 127.0.0.1, so any local client could choose its address.
    "proxy_headers": False,
}


def _serve(args: argparse.Namespace, log_config: dict[str, Any]) -> None:
    uvicorn.run(
        "shop.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config,  # applied in every worker: one format for every line
        **SERVER_OPTIONS,
    )


if __name__ == "__main__":
    main()
