"""`shop serve` as a newcomer runs it: no database configured, demo data on."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shop.kit.embedded import free_port

SHOP = Path(sys.executable).parent / "shop"

pytestmark = pytest.mark.slow


def _get(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read()
        is_json = response.headers.get_content_type() == "application/json"
        return response.status, json.loads(body) if is_json else body


def _serve(data_dir: Path, port: int) -> tuple[list[dict[str, Any]], int]:
    """Run the service until it answers, read the catalog, stop it with SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {"SHOP_DATA_DIR": str(data_dir), "SHOP_DEMO_DATA": "true"}
    process = subprocess.Popen(
        [str(SHOP), "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, catalog = _get(f"http://127.0.0.1:{port}/products/?limit=100")
                break
            except OSError:
                assert process.poll() is None, "shop serve exited"
                assert time.monotonic() < deadline, "shop serve did not answer"
                time.sleep(0.3)
        assert status == 200
        assert _get(f"http://127.0.0.1:{port}/docs")[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/products/", timeout=5) as answer:
            assert "server" not in answer.headers  # no version for scanners
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert _get(f"http://127.0.0.1:{port}/openapi.json")[1]["info"]["title"] == "shop"
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=60)
    assert process.returncode == 0, log
    database_port = int(re.findall(r"embedded database at mongodb://127.0.0.1:(\d+)", log)[0])
    return catalog["items"], database_port


def test_serve_runs_on_an_embedded_database_that_keeps_its_data(tmp_path: Path) -> None:
    first, database_port = _serve(tmp_path, free_port())
    assert len(first) >= 5
    assert (tmp_path / "db").is_dir()
    assert (tmp_path / "secret_key").exists()
    # The embedded database stopped with the service.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", database_port)) != 0

    again, _ = _serve(tmp_path, free_port())
    assert [p["id"] for p in again] == [p["id"] for p in first]  # kept, and not seeded twice


def test_serve_runs_on_uvloop_and_httptools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Several workers on plain asyncio answered every request ~40 ms late (no TCP_NODELAY
    on uvicorn's shared socket); uvloop sets it, and with httptools costs less CPU."""
    import httptools  # noqa: F401  (installed by uvicorn[standard])
    import uvicorn
    import uvloop  # noqa: F401
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from shop import cli

    options: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *_, **kwargs: options.update(kwargs))
    monkeypatch.setenv("SHOP_MONGODB_URL", "mongodb://127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path))
    # What main() sets up for a real process, kept out of this test process.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr("logging.config.dictConfig", lambda *_: None)
    for name in ("SHOP_HOST", "SHOP_PORT"):  # main() exports them: undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    cli.main(["serve", "--workers", "2"])
    assert (options["loop"], options["workers"]) == ("uvloop", 2)
    assert issubclass(options["http"], HttpToolsProtocol)
    assert (options["host"], options["port"]) == ("127.0.0.1", 8000)

    monkeypatch.setenv("SHOP_HOST", "0.0.0.0")
    monkeypatch.setenv("SHOP_PORT", "8080")
    monkeypatch.setenv("SHOP_WORKERS", "3")
    cli.main(["serve"])
    assert (options["host"], options["port"], options["workers"]) == ("0.0.0.0", 8080, 3)
    cli.main(["serve", "--port", "9000"])  # an option wins over the setting
    assert options["port"] == 9000


def test_several_workers_share_their_metrics_through_files_and_one_keeps_them_in_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    from shop import cli

    seen: list[str | None] = []
    monkeypatch.setattr(
        uvicorn, "run", lambda *_, **__: seen.append(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    )
    monkeypatch.setenv("SHOP_MONGODB_URL", "mongodb://127.0.0.1:1/?directConnection=true")
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("logging.config.dictConfig", lambda *_: None)
    # What main() exports for its workers is undone after the test.
    for name in ("SHOP_HOST", "SHOP_PORT", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    cli.main(["serve", "--workers", "1"])
    assert seen == [None] and not (tmp_path / "metrics").exists()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_4242.db").write_bytes(b"a stopped worker's figures")
    cli.main(["serve", "--workers", "2"])
    assert seen[1] == str(tmp_path.resolve() / "metrics")
    assert list((tmp_path / "metrics").iterdir()) == []  # emptied before any worker starts


def test_make_run_passes_host_and_port_and_makes_a_development_admin() -> None:
    dry = subprocess.run(
        ["make", "-n", "run", "HOST=0.0.0.0", "PORT=8080"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "SHOP_HOST=0.0.0.0 SHOP_PORT=8080" in dry
    assert "SHOP_DEV_ADMIN=${SHOP_DEV_ADMIN:-true}" in dry


def test_a_client_that_sends_half_a_request_is_cut_off(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {"SHOP_DATA_DIR": str(tmp_path), "SHOP_REQUEST_READ_TIMEOUT_SECONDS": "1"}
    process = subprocess.Popen([str(SHOP), "serve", "--port", str(port)], env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert _get(f"http://127.0.0.1:{port}/products/")[0] == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "shop serve did not answer"
                time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /products/ HTTP/1.1\r\nHost: shop\r\n")  # ... and nothing more
            started = time.monotonic()
            assert slow.recv(1024) == b""  # the server closed the connection
            assert time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            for _ in range(3):  # whole requests on a kept-alive connection are answered
                kept.sendall(b"GET /products/?limit=1 HTTP/1.1\r\nHost: shop\r\n\r\n")
                assert _read_response(kept).startswith(b"HTTP/1.1 200")
                time.sleep(0.6)  # longer, in all, than the deadline for one request
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _read_response(connection: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (headers and a Content-Length body) from ``connection``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, "the connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.findall(rb"content-length: (\d+)", head.lower())[0])
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def test_serve_says_why_when_the_embedded_database_cannot_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from shop import cli
    from shop.kit.embedded import EmbeddedMongo

    def missing(self: EmbeddedMongo, timeout: float = 30.0) -> None:
        raise RuntimeError("no embedded database: set SHOP_MONGODB_URL ...")

    monkeypatch.delenv("SHOP_MONGODB_URL", raising=False)
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr("logging.config.dictConfig", lambda *_: None)
    monkeypatch.setattr(EmbeddedMongo, "start", missing)
    for name in ("SHOP_HOST", "SHOP_PORT"):  # main() exports them: undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr("signal.signal", lambda *_: None)
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve"])
    assert exited.value.code == "shop: no embedded database: set SHOP_MONGODB_URL ..."


def test_a_second_start_on_the_same_data_directory_touches_nothing_of_the_first(
    tmp_path: Path,
) -> None:
    from tests.processes import answers, start_shop, stop

    port = free_port()
    first = start_shop(tmp_path, port, SHOP_DEV_ADMIN="true")
    try:
        assert answers(port, 60) is not None
        for _ in range(3):
            _get(f"http://127.0.0.1:{port}/products/")
        counted = re.compile(r'shop_http_requests_total\{method="GET",route="/products/"')
        assert counted.search(_get(f"http://127.0.0.1:{port}/metrics")[1].decode())

        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
        env |= {"SHOP_DATA_DIR": str(tmp_path), "SHOP_DEV_ADMIN": "true"}
        second = subprocess.run(
            [str(SHOP), "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert "already running" in second.stderr
        assert "will answer" not in second.stdout and "password" not in second.stdout
        # The first one's figures are all there still.
        assert counted.search(_get(f"http://127.0.0.1:{port}/metrics")[1].decode())
    finally:
        stop(first, tmp_path)
