"""A newcomer's first hour, as the README tells it: `make run`'s development admin, the
curl walk-through run as written (curl and python3 only), and `shop create-admin`."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from shop.kit.embedded import free_port
from tests.processes import SHOP

ROOT = Path(__file__).parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("curl") is None, reason="the walk-through uses curl"),
]


def walk_through() -> str:
    """The README's walk-through, from its bash block, without `make run &`."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## A walk through with curl") :]
    script = section[section.index("```bash\n") + 8 : section.index("```\n", 8)]
    assert script.startswith("make run &")
    return script.split("\n", 1)[1]


def test_the_walk_through_runs_as_written_and_admins_can_be_made(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    env |= {"SHOP_DATA_DIR": str(tmp_path), "SHOP_DEMO_DATA": "true", "SHOP_DEV_ADMIN": "true"}
    out = tmp_path / "stdout"
    with out.open("w") as stdout, (tmp_path / "log").open("w") as stderr:
        shop = subprocess.Popen(
            [str(SHOP), "serve", "--port", str(port)], env=env, stdout=stdout, stderr=stderr
        )
    try:
        script = walk_through().replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr + ran.stdout
        assert '"status": "paid"' in ran.stdout
        assert '"order_status": "partially_returned"' in ran.stdout  # one unit of two back
        assert '"quantity": 2' in ran.stdout  # three added, one removed

        printed = out.read_text()
        assert f"the API will answer at http://127.0.0.1:{port}/ and its docs at" in printed
        ready = f"ready: the API answers at http://127.0.0.1:{port}/ and its docs at"
        assert ready in (tmp_path / "log").read_text()
        email, password = re.findall(r"development admin (\S+), password (\S+)", printed)[0]
        assert password not in (tmp_path / "log").read_text()  # printed, never logged
        base = f"http://127.0.0.1:{port}"
        token = httpx.post(f"{base}/auth/token", data={"username": email, "password": password})
        me = httpx.get(f"{base}/auth/me", headers=bearer(token))
        assert me.json()["role"] == "admin"

        made = subprocess.run(
            [str(SHOP), "create-admin", "Boss@Example.com", "--password-stdin"],
            input="a long boss password\n",
            env={k: v for k, v in env.items() if k != "SHOP_DEV_ADMIN"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        boss = httpx.post(
            f"{base}/auth/token",
            data={"username": "boss@example.com", "password": "a long boss password"},
        )
        listed = httpx.get(f"{base}/admin/users/?email=boss", headers=bearer(boss))
        assert [u["role"] for u in listed.json()["items"]] == ["admin"]
    finally:
        shop.terminate()
        shop.wait(timeout=60)


def bearer(token: httpx.Response) -> dict[str, str]:
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}
