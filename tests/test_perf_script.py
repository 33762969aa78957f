"""`make perf` still runs end to end: a quick smoke run, checked for what the report must show."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_load_test_runs_clean_and_reports_against_the_floor(tmp_path: Path) -> None:
    latest = ROOT / "perf" / "results" / "latest"
    before = latest.resolve() if latest.exists() else None
    result = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    found = re.search(r"^report: (.+)$", result.stdout, re.MULTILINE)
    assert found, result.stdout[-2000:]
    report_file = Path(found.group(1))
    report = report_file.read_text()
    out = report_file.parent
    for request in ("`POST /cart/add/`", "`GET /cart/`"):
        rows = [line for line in report.splitlines() if line.startswith(f"| {request} |")]
        assert len(rows) == 2, report  # one and two workers
        for row in rows:
            ratios = re.findall(r"\*\*([0-9.]+)\*\*", row)
            assert len(ratios) == 2 and all(float(r) > 0 for r in ratios), row
            assert row.rstrip(" |").endswith("| 0"), row  # no failed request
    assert "k6 thresholds passed" in report
    assert "create_order p95 / add_to_cart p95" in report
    assert "first page of" in report and "page at" in report
    assert list((out / "dashboards").glob("*.html")), "no k6 HTML dashboard"
    assert list((out / "k6").glob("*.json")), "no k6 summary"
    # Instructions per request, counted under callgrind: both requests, each with its ratio.
    counted = report.split("## Instructions per request")[1].split("##")[0]
    if shutil.which("valgrind") is None:
        assert "Not measured: valgrind is not installed." in counted
    else:
        for request in ("`POST /cart/add/`", "`GET /cart/`"):
            (row,) = [line for line in counted.splitlines() if request in line]
            assert re.fullmatch(
                r"\| .+ \| [0-9.]+ M, [0-9.]+ M \| [0-9.]+ M, [0-9.]+ M "
                r"\| \*\*[0-9.]+\*\* \|",
                row,
            ), row
            assert float(row.split("**")[1]) > 0, row
    # Cost as the data grows: every hot request at each level; and the sustained runs.
    growth = report.split("## Cost as the data grows")[1].split("##")[0]
    assert "| request | 0 | 1,000 | last / none |" in growth
    assert all(f"| {name} |" in growth for name in ("add to cart", "checkout", "pay", "login"))
    sustained = report.split("## Sustained load")[1]
    assert re.search(r"^\| 2 \| [0-9]+ \|", sustained, re.MULTILINE), sustained
    assert re.search(r"Last / first: \*\*[0-9.]+\*\*", sustained)
    # A report written elsewhere leaves the user's own latest report where it was.
    assert report_file.parent == tmp_path
    assert (latest.resolve() if latest.exists() else None) == before
