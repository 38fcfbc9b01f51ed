"""Helpers for the suite's tests (fixtures stay in ``conftest.py``).

Import them as ``from tests.helpers import until``. Everything here goes through the real
connector; the server's state is asked in SQL that works on a real account where it can
be (``running_in_session``), else through the emulator's inspection API.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import snowflake.connector

from asyncsession import AsyncSession, Session
from asyncsession._driver import connector_major
from asyncsession.testing import LocalSnowflake

CONNECTOR_MAJOR = connector_major()

#: Run a test (module) on asyncio and trio.
both_backends = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"], indirect=True)


def connect(params: dict[str, Any], **extra: Any) -> Any:
    """A plain connector connection, quiet on both generations."""
    kwargs = {**params, **extra}
    if CONNECTOR_MAJOR >= 5:
        kwargs.setdefault("enable_server_session_keep_alive_auto_detection", False)
    return snowflake.connector.connect(**kwargs)


def running_in_session(params: dict[str, Any], session_id: int) -> list[tuple[Any, ...]]:
    """The queries of ``session_id`` still RUNNING, asked in SQL that works on a real account."""
    with connect(params) as conn:
        return list(
            conn.cursor()
            .execute(
                "select query_id, query_text from table("
                f"information_schema.query_history_by_session(session_id => {int(session_id)})) "
                "where execution_status = 'RUNNING'"
            )
            .fetchall()
        )


async def until(predicate: Any, deadline: float = 10.0) -> Any:
    """Wait for ``predicate()`` to be truthy, polling, with a deadline (never a bare sleep)."""
    with anyio.fail_after(deadline):
        while not (value := predicate()):  # noqa: ASYNC110 - the state lives in another process or thread
            await anyio.sleep(0.005)
    return value


async def session_for(sf: LocalSnowflake, **options: Any) -> AsyncSession:
    """A session on ``sf`` with our ``options`` on top of its connection parameters."""
    return await Session.builder.configs({**sf.connection_parameters, **options}).create()


async def wait_running(sf: LocalSnowflake, session: AsyncSession, n: int) -> list[dict[str, Any]]:
    """Wait (bounded) until the emulator runs ``n`` queries of this session."""

    def mine() -> list[dict[str, Any]]:
        running = [q for q in sf.running_queries() if q["session_id"] == session.session_id]
        return running if len(running) >= n else []

    result: list[dict[str, Any]] = await until(mine)
    return result
