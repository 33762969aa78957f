"""Property-based fuzzing of the whole API from its OpenAPI document (schemathesis).

A real service process answers thousands of generated requests, valid and invalid; none
may produce a 500, and every answer must match the documented status codes, media types
and schemas (errors included: problem+json).
"""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shop.kit.embedded import free_port

BIN = Path(sys.executable).parent
ADMIN = ("fuzz-admin@example.com", "fuzz-admin-password")

pytestmark = pytest.mark.slow


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "SHOP_MONGODB_URL": database_url,
        "SHOP_DB_NAME": "shop_fuzz",
        "SHOP_DATA_DIR": str(tmp_path),
        "SHOP_DEMO_DATA": "true",
        "SHOP_ADMIN_EMAIL": ADMIN[0],
        "SHOP_ADMIN_PASSWORD": ADMIN[1],
    }
    process = subprocess.Popen(
        [str(BIN / "shop"), "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/openapi.json", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the service did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _admin_token(url: str) -> str:
    form = urllib.parse.urlencode({"username": ADMIN[0], "password": ADMIN[1]}).encode()
    with urllib.request.urlopen(f"{url}/auth/token", data=form, timeout=10) as response:
        token: str = json.load(response)["access_token"]
        return token


def test_no_generated_request_breaks_the_api(service: str) -> None:
    token = _admin_token(service)
    result = subprocess.run(
        [
            str(BIN / "st"),
            "run",
            f"{service}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-6000:]
