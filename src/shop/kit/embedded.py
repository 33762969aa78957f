"""The embedded database: SecantusDB run as a separate program, and kept running.

SecantusDB is GPL-licensed, so it is launched, never imported. Its data lives in
``storage_path`` and is reopened intact on the next start (``":memory:"`` gives throw-away
storage). It never outlives the process that started it: on Linux the kernel stops it when
that process dies, however it dies, and a server left behind all the same (another system,
or a parent that died during start-up) is found through its pid file and stopped before a
new one starts on the same files.
"""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

# Run by the interpreter in place of the server: asks the kernel to kill it when the parent
# dies, then becomes the server. SIGKILL, because the server's own shutdown on SIGTERM was
# seen to hang, and every write the shop acknowledged is in the journal already. Done here
# rather than in preexec_fn, which is unsafe in a process with threads.
_LAUNCHER = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent died before the request took effect
os.execv(sys.argv[2], sys.argv[2:])
"""


class EmbeddedMongo:
    """A SecantusDB server on a loopback port (a free one unless ``port`` is given)."""

    def __init__(
        self,
        storage_path: str | Path,
        host: str = "127.0.0.1",
        *,
        port: int | None = None,
        test_commands: bool = False,
    ) -> None:
        self.storage_path = str(storage_path)
        self.host = host
        self.test_commands = test_commands
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return embedded_url(self.host, self.port)

    @property
    def _pid_file(self) -> Path | None:
        return None if self.storage_path == ":memory:" else Path(f"{self.storage_path}.pid")

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if self._pid_file is not None:
            Path(self.storage_path).mkdir(parents=True, exist_ok=True)
            self._stop_stale()
        server = [
            _server_program(),
            *("--host", self.host, "--port", str(self.port)),
            *("--storage-path", self.storage_path, "--log-level", "WARNING"),
            # The server honours j: true on single writes but not on commitTransaction: an
            # acknowledged checkout was lost when it was killed. Every commit is synced.
            "--sync-on-commit",
            *(["--enable-test-commands"] if self.test_commands else []),
        ]
        log.info("starting embedded database: %s", " ".join(server))
        self._process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *server],
            start_new_session=True,  # a Ctrl-C at the terminal reaches the shop, which stops it
        )
        if self._pid_file is not None:
            record = {"pid": self._process.pid, "parent": os.getpid(), "port": self.port}
            self._pid_file.write_text(json.dumps(record))
        deadline = time.monotonic() + timeout
        probe: MongoClient[dict[str, Any]]
        with MongoClient(self.url, serverSelectionTimeoutMS=500) as probe:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"the embedded database exited with {self._process.returncode}; is "
                        f"another shop already using {self.storage_path}, or port {self.port}?"
                    )
                try:
                    probe.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("embedded database did not start in time") from None
                    time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # the server closes WiredTiger cleanly
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._forget_pid_file(process)

    def kill(self) -> None:
        """Stop it the hard way (SIGKILL), as a crash or a power cut would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _forget_pid_file(self, process: subprocess.Popen[bytes] | None) -> None:
        if self._pid_file is None or process is None:
            return
        try:
            if json.loads(self._pid_file.read_text()).get("pid") == process.pid:
                self._pid_file.unlink()
        except (OSError, ValueError):
            pass

    def _stop_stale(self) -> None:
        """Stop a server left on these files by a process that died; refuse to start beside
        one whose process is alive (another shop is using the data directory)."""
        assert self._pid_file is not None
        try:
            record = json.loads(self._pid_file.read_text())
            pid, parent = int(record["pid"]), int(record["parent"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if not _is_server(pid, self.storage_path):
            return
        if _alive(parent):
            raise RuntimeError(
                f"another shop (process {parent}) is already using {self.storage_path}"
            )
        log.warning("stopping embedded database %d left by process %d, which died", pid, parent)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> "EmbeddedMongo":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class Supervisor(threading.Thread):
    """Restarts the embedded database when it exits, with back-off; gives up after
    ``attempts`` failed restarts in a row and calls ``give_up``."""

    def __init__(
        self, database: EmbeddedMongo, give_up: Any, attempts: int = 5, check_every: float = 0.5
    ) -> None:
        super().__init__(name="embedded-database-supervisor", daemon=True)
        self.database = database
        self.give_up = give_up
        self.attempts = attempts
        self.check_every = check_every
        self.failed = False
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.check_every):
            if self.database.running():
                continue
            log.error("the embedded database exited; restarting it")
            if not self._restart():
                self.failed = True
                log.critical(
                    "the embedded database could not be restarted after %d attempts; "
                    "stopping the shop",
                    self.attempts,
                )
                self.give_up()
                return

    def _restart(self) -> bool:
        for attempt in range(self.attempts):
            if self._stopping.wait(min(0.5 * 2**attempt, 4.0)):
                return True
            try:
                self.database.start()
                log.warning("embedded database restarted (attempt %d)", attempt + 1)
                return True
            except (RuntimeError, OSError) as failure:
                log.error("restarting the embedded database failed: %s", failure)
        return False

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5)


def running_url(storage_path: Path) -> str | None:
    """The URL of the embedded database a live ``shop serve`` runs on these files, if any."""
    try:
        record = json.loads(Path(f"{storage_path}.pid").read_text())
        pid, parent, port = int(record["pid"]), int(record["parent"]), int(record["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _is_server(pid, str(storage_path)) and _alive(parent):
        return embedded_url("127.0.0.1", port)
    return None


def embedded_url(host: str, port: int) -> str:
    """How the shop connects to its embedded database: directly, without retryable writes.

    The server records every retryable write for 30 minutes in a registry it scans on each
    write (and sorts past 10,000 entries): after an hour of traffic every write cost about
    five times as much. What retrying buys is exactly-once after a dropped connection or a
    failover, and on this single local server neither can happen without the server itself
    dying, which loses the registry (it lives in memory). So the retry could not be
    recognised anyway. A write cut off that way fails instead, and the request with it; the
    client retries under its Idempotency-Key. A ``SHOP_MONGODB_URL`` keeps the driver's
    default (retryable writes on), which a replica set needs.
    """
    return f"mongodb://{host}:{port}/?directConnection=true&retryWrites=false"


def _is_server(pid: int, storage_path: str) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc: trust the pid file
    return storage_path.encode() in command


def _alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped yet has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _server_program() -> str:
    beside_python = Path(sys.executable).parent / "secantusd-py"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("secantusd-py")
    if found is None:
        raise RuntimeError(
            "no embedded database: set SHOP_MONGODB_URL to a MongoDB replica set, or install "
            "it with `pip install 'shop[embedded]'` (make run and make test do)"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
