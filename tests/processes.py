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


def start_shop(data_dir: Path, port: int, workers: int = 1) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {"SHOP_DATA_DIR": str(data_dir), "SHOP_DEMO_DATA": "true"}
    command = [str(SHOP), "serve", "--port", str(port), "--workers", str(workers)]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


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


def workers_of(shop: subprocess.Popen[str]) -> set[int]:
    workers = set()
    for child in psutil.Process(shop.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.add(child.pid)
        except psutil.ZombieProcess:
            pass  # a dead worker not yet reaped
    return workers
