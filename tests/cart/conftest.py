from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shop.kit.config import AppSettings


@pytest.fixture
async def elsewhere(base_settings: AppSettings) -> AsyncIterator[Any]:
    """The shop's database as another process sees it: a second client, whose writes this
    service's command listener does not see, like another worker's or another host's."""
    assert base_settings.mongodb_url is not None
    other: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(base_settings.mongodb_url)
    yield other[base_settings.db_name]
    await other.close()
