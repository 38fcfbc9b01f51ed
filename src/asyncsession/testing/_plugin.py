"""pytest plugin (auto-loaded with ``asyncsession[testing]``): a running local Snowflake.

Fixtures: ``local_snowflake`` (session-scoped ``LocalSnowflake``) and
``snowflake_connection_parameters`` (its connection parameters, a fresh dict per test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ._launcher import LocalSnowflake


@pytest.fixture(scope="session")
def local_snowflake() -> Iterator[LocalSnowflake]:
    with LocalSnowflake() as emulator:
        yield emulator


@pytest.fixture
def snowflake_connection_parameters(local_snowflake: LocalSnowflake) -> dict[str, Any]:
    return dict(local_snowflake.connection_parameters)
