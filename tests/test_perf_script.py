"""The k6 journey still runs against the service: a short smoke run of `make perf`."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_load_test_runs_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "run.py"), "--vus", "2", "--duration", "3s"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "paid_orders" in result.stdout
