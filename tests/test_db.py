import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo import MongoClient, ReadPreference
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from shop.kit import db
from shop.kit.config import AppSettings
from shop.kit.db import connect
from shop.kit.embedded import EmbeddedMongo


@pytest.mark.slow
def test_embedded_database_reopens_its_data_intact(tmp_path: Path) -> None:
    with EmbeddedMongo(tmp_path / "db") as first, MongoClient(first.url) as client:
        client.shop.things.insert_one({"_id": "kept", "n": 1})
    with EmbeddedMongo(tmp_path / "db") as second, MongoClient(second.url) as client:
        assert client.shop.things.find_one({"_id": "kept"}) == {"_id": "kept", "n": 1}


def test_production_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ValueError, match="SHOP_SECRET_KEY"):
        AppSettings(environment="production", secret_key=None)


def test_development_key_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = AppSettings(data_dir=tmp_path, secret_key=None)
    key = settings.signing_key()
    assert len(key) >= 32
    assert AppSettings(data_dir=tmp_path, secret_key=None).signing_key() == key
    assert (tmp_path / "secret_key").read_text() == key


@pytest.mark.slow
def test_a_data_directory_serves_one_database_at_a_time(tmp_path: Path) -> None:
    with EmbeddedMongo(tmp_path / "db"), pytest.raises(RuntimeError, match="already using"):
        EmbeddedMongo(tmp_path / "db").start()


async def test_the_client_journals_majority_writes_and_reads_the_primary_whatever_the_url() -> None:
    url = "mongodb://127.0.0.1:9/?readPreference=secondaryPreferred&w=1&journal=false"
    client = connect(url)
    try:
        assert client.read_preference == ReadPreference.PRIMARY
        assert client.write_concern.document == {"w": "majority", "j": True}
    finally:
        await client.close()


def test_production_refuses_a_development_admin() -> None:
    with pytest.raises(ValueError, match="SHOP_DEV_ADMIN"):
        AppSettings(environment="production", secret_key="k" * 40, dev_admin=True)


@pytest.mark.slow
def test_fault_injection_skips_saying_why_on_a_server_without_test_commands() -> None:
    """Atlas and most managed replica sets have no failCommand (CommandNotFound, code 59)."""
    with EmbeddedMongo(":memory:", test_commands=False) as managed:
        env = {**os.environ, "SHOP_MONGODB_URL": managed.url}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
             str(Path(__file__).parent / "test_faults.py")],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    summary = run.stdout.strip().splitlines()[-1]  # every test skipped, none run
    assert re.fullmatch(r"\d+ skipped in .*", summary), run.stdout
    assert "no failCommand" in run.stdout, run.stdout


async def test_a_transaction_cut_off_by_its_deadline_leaves_nothing_locked(
    timed_collection: AsyncCollection[Any],
) -> None:
    """An attempt that ran out of time after it wrote is aborted on the server: otherwise the
    server keeps the transaction, and its locks, until it reaps it (60 s on mongod), and every
    other writer of that document times out waiting."""
    things = timed_collection
    await things.insert_one({"_id": "locked", "n": 0})
    attempts_end = time.monotonic() + db.attempts_time_limit()

    async def too_slow(session: AsyncClientSession) -> None:
        await things.update_one({"_id": "locked"}, {"$inc": {"n": 1}}, session=session)
        await asyncio.sleep(attempts_end + 0.3 - time.monotonic())  # stalled past its time
        await things.find_one({"_id": "locked"}, session=session)

    with pytest.raises(PyMongoError) as cut_off:
        await db.in_transaction(too_slow)
    assert cut_off.value.timeout

    with pymongo.timeout(2):
        await things.update_one({"_id": "locked"}, {"$inc": {"n": 10}})
    assert await things.find_one({"_id": "locked"}) == {"_id": "locked", "n": 10}
