"""The embedded database is kept running by `shop serve`, never outlives it, and a server
left behind by a dead process is stopped before a new one starts on the same files."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from shop.embedded import EmbeddedMongo, _alive, _server_program, free_port

SHOP = Path(sys.executable).parent / "shop"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and prctl")


def start_shop(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {"SHOP_DATA_DIR": str(data_dir), "SHOP_DEMO_DATA": "true"}
    return subprocess.Popen(
        [str(SHOP), "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )


def answers(port: int, seconds: float) -> list[str] | None:
    """The catalog's product ids once the shop answers 200 within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/products/", timeout=5)
            if response.status_code == 200:
                return [p["id"] for p in response.json()["items"]]
            assert response.status_code == 503, response.text  # never a 500
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return None


def database_pid(data_dir: Path) -> tuple[int, int]:
    record = json.loads((data_dir / "db.pid").read_text())
    return int(record["pid"]), int(record["port"])


def port_closed(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.1)
    return False


def stop(shop: subprocess.Popen[str]) -> str:
    if shop.poll() is None:
        shop.send_signal(signal.SIGTERM)
    _, log = shop.communicate(timeout=60)
    return log


def test_a_database_that_dies_is_restarted_under_the_same_shop(tmp_path: Path) -> None:
    port = free_port()
    shop = start_shop(tmp_path, port)
    try:
        before = answers(port, 60)
        assert before, "shop serve did not answer"
        pid, _ = database_pid(tmp_path)
        os.kill(pid, signal.SIGKILL)
        assert answers(port, 30) == before  # same shop process, same data
        assert shop.poll() is None
        assert database_pid(tmp_path)[0] != pid
    finally:
        log = stop(shop)
    assert shop.returncode == 0, log
    assert "restarted" in log


def test_a_killed_shop_takes_its_database_along_and_starts_again(tmp_path: Path) -> None:
    port = free_port()
    shop = start_shop(tmp_path, port)
    try:
        before = answers(port, 60)
        assert before, "shop serve did not answer"
        pid, database_port = database_pid(tmp_path)
    finally:
        shop.kill()  # SIGKILL: no shutdown code runs
        shop.communicate(timeout=30)
    assert port_closed(database_port, 15), "the embedded database outlived its shop"
    assert not _alive(pid)

    again = start_shop(tmp_path, port := free_port())
    try:
        started = time.monotonic()
        assert answers(port, 60) == before
        assert time.monotonic() - started < 30
    finally:
        stop(again)


def test_shop_serve_exits_non_zero_when_its_database_cannot_come_back(tmp_path: Path) -> None:
    port = free_port()
    shop = start_shop(tmp_path, port)
    squatter = socket.socket()
    try:
        assert answers(port, 60), "shop serve did not answer"
        pid, database_port = database_pid(tmp_path)
        os.kill(pid, signal.SIGKILL)
        assert port_closed(database_port, 5)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", database_port))  # the restarted server cannot listen
        squatter.listen()
        _, log = shop.communicate(timeout=90)
    finally:
        squatter.close()
        if shop.poll() is None:
            shop.kill()
    assert shop.returncode != 0
    assert "could not be restarted" in log


def test_a_server_left_by_a_dead_process_is_stopped_before_a_new_one_starts(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "db"
    storage.mkdir()
    port = free_port()
    stale = subprocess.Popen(
        [_server_program(), "--port", str(port), "--storage-path", str(storage)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gone = subprocess.run([sys.executable, "-c", "pass"], check=True)  # a parent that died
    dead_parent = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_parent.wait()
    assert gone.returncode == 0
    Path(f"{storage}.pid").write_text(
        json.dumps({"pid": stale.pid, "parent": dead_parent.pid, "port": port})
    )
    with MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true") as client:
        client.shop.things.insert_one({"kept": True})  # the stale server is up and writing
    try:
        with EmbeddedMongo(storage) as fresh, MongoClient(fresh.url) as client:
            assert stale.wait(timeout=30) is not None  # stopped, not left running
            assert client.shop.things.find_one({}, {"_id": 0}) == {"kept": True}
    finally:
        if stale.poll() is None:
            stale.kill()
