"""Real ``shop serve`` processes for the tests that drive them as an operator would."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

SHOP = Path(sys.executable).parent / "shop"


def start_shop(
    data_dir: Path, port: int, workers: int = 1, **settings: str
) -> subprocess.Popen[str]:
    """``shop serve`` on ``data_dir``, logging to ``log_of(data_dir)``: a file, never a pipe
    nobody reads (a full pipe would stop the service at its next log line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {"SHOP_DATA_DIR": str(data_dir), "SHOP_DEMO_DATA": "true", **settings}
    command = [str(SHOP), "serve", "--port", str(port), "--workers", str(workers)]
    with (data_dir / "shop.log").open("a") as log:
        return subprocess.Popen(command, env=env, stderr=log, text=True)


def log_of(data_dir: Path) -> str:
    return (data_dir / "shop.log").read_text()


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


def stop(shop: subprocess.Popen[str], data_dir: Path) -> str:
    """SIGTERM, wait, and the service's log."""
    if shop.poll() is None:
        shop.send_signal(signal.SIGTERM)
    shop.wait(timeout=60)
    return log_of(data_dir)


def workers_of(shop: subprocess.Popen[str]) -> set[int]:
    workers = set()
    for child in psutil.Process(shop.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.add(child.pid)
        except psutil.NoSuchProcess:  # a worker that died just now, reaped or not yet
            pass
    return workers
