"""pytest plugin (auto-loaded with ``asyncsession[testing]``): a local Snowflake, or a real one.

Fixtures: ``local_snowflake`` (session-scoped ``LocalSnowflake``) and
``snowflake_connection_parameters`` (connection parameters, a fresh dict per test).

**Live mode**: ``--snowflake-connection NAME`` (or ``ASYNCSESSION_TEST_CONNECTION=NAME``)
names a connections.toml profile; ``snowflake_connection_parameters`` then comes from it
(resolved as ``Session.builder`` would) instead of the emulator, and every test that
needs the emulator is skipped: those marked ``emulator_only`` and those that use the
``local_snowflake`` fixture. Without a name, nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from ._launcher import LocalSnowflake

#: The environment variable that turns live mode on, as ``--snowflake-connection`` does.
CONNECTION_ENV = "ASYNCSESSION_TEST_CONNECTION"
EMULATOR_ONLY = "emulator_only"
#: The live connection's resolved parameters, when live mode is on.
_LIVE = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("asyncsession")
    group.addoption(
        "--snowflake-connection",
        metavar="NAME",
        default=None,
        help=(
            "run against this connections.toml connection instead of the local emulator "
            f"(tests marked {EMULATOR_ONLY} are skipped); default: ${CONNECTION_ENV}"
        ),
    )


def live_connection(config: pytest.Config) -> str | None:
    """The connection name of live mode, or ``None`` (the emulator)."""
    name = config.getoption("--snowflake-connection") or os.environ.get(CONNECTION_ENV, "")
    return str(name).strip() or None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{EMULATOR_ONLY}: needs the local emulator (its inspection or fault API, or "
        "SQL only it runs); skipped in live mode (--snowflake-connection)",
    )
    name = live_connection(config)
    if name is not None:
        config.stash[_LIVE] = _resolve_live(name)


def pytest_report_header(config: pytest.Config) -> str:
    name = live_connection(config)
    if name is None:
        return "asyncsession: local emulator"
    return f"asyncsession: LIVE mode, connection {name!r} ({EMULATOR_ONLY} tests skipped)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _LIVE in item.config.stash and item.get_closest_marker(EMULATOR_ONLY) is not None:
        pytest.skip(f"{EMULATOR_ONLY}: needs the local emulator (live mode)")


def _resolve_live(name: str) -> dict[str, Any]:
    from .._config import resolve
    from .._errors import ConfigurationError

    try:
        return resolve({"connection_name": name}).connect_kwargs
    except ConfigurationError as e:
        raise pytest.UsageError(f"--snowflake-connection {name!r}: {e}") from None


@pytest.fixture(scope="session")
def _asyncsession_emulator(request: pytest.FixtureRequest) -> Iterator[LocalSnowflake | None]:
    """The session's emulator, shared by both public fixtures; ``None`` in live mode."""
    if _LIVE in request.config.stash:
        yield None
        return
    with LocalSnowflake() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def local_snowflake(_asyncsession_emulator: LocalSnowflake | None) -> LocalSnowflake:
    if _asyncsession_emulator is None:
        pytest.skip("uses the local emulator (live mode)")
    return _asyncsession_emulator


@pytest.fixture
def snowflake_connection_parameters(
    request: pytest.FixtureRequest, _asyncsession_emulator: LocalSnowflake | None
) -> dict[str, Any]:
    if _asyncsession_emulator is None:
        live: dict[str, Any] = request.config.stash[_LIVE]
        return dict(live)
    return dict(_asyncsession_emulator.connection_parameters)
