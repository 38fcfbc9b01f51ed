"""Helpers for the pool tests: a pool on an emulator, and the session-state stub.

Until branch ``params`` (per-query options, transactions, ``SessionState``) lands, the
pool's reset reads ``session._state`` and calls ``session._rollback()``, which do not
exist yet: ``stub_session_state`` gives every ``AsyncSession`` a tracker that records the
``use_*`` / ``set_query_tag`` calls, the way ``SessionState`` does. It does nothing once
the real tracker exists.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from asyncsession import AsyncSession, Session, SessionBuilder
from asyncsession.testing import LocalSnowflake

HAS_SESSION_STATE = hasattr(AsyncSession, "_rollback")


class StubState:
    def __init__(self) -> None:
        self.in_transaction = False
        self.changed: set[str] = set()

    def reset(self) -> None:
        self.changed.clear()


@pytest.fixture(autouse=True)
def stub_session_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if HAS_SESSION_STATE:
        yield
        return
    states: weakref.WeakKeyDictionary[AsyncSession, StubState] = weakref.WeakKeyDictionary()

    def state(self: AsyncSession) -> StubState:
        return states.setdefault(self, StubState())

    original_use = AsyncSession._use
    original_tag = AsyncSession.set_query_tag

    # Recorded before the statement runs. One that did not end normally (cancelled,
    # failed) may still take effect on the server after its abort was answered, even
    # after a restoring statement: its effect is "unknown" (the pool then discards).
    async def use(self: AsyncSession, kind: str, name: str) -> None:
        state(self).changed.add(kind)
        try:
            await original_use(self, kind, name)
        except BaseException:
            state(self).changed.add("unknown")
            raise

    async def set_query_tag(self: AsyncSession, tag: str | None) -> None:
        state(self).changed.add("query_tag")
        try:
            await original_tag(self, tag)
        except BaseException:
            state(self).changed.add("unknown")
            raise

    async def rollback(self: AsyncSession) -> None:
        await self._run_query("rollback", None, lambda c: None)
        state(self).in_transaction = False

    monkeypatch.setattr(AsyncSession, "_state", property(state), raising=False)
    monkeypatch.setattr(AsyncSession, "_use", use)
    monkeypatch.setattr(AsyncSession, "set_query_tag", set_query_tag)
    monkeypatch.setattr(AsyncSession, "_rollback", rollback, raising=False)
    yield


def builder_for(sf: LocalSnowflake, **options: Any) -> SessionBuilder:
    return Session.builder.configs({**sf.connection_parameters, **options})


def server_session_ids(sf: LocalSnowflake) -> set[int]:
    return {int(s["session_id"]) for s in sf.sessions()}


def queries_of(sf: LocalSnowflake, session_id: int) -> list[dict[str, Any]]:
    return [q for q in sf.queries() if q["session_id"] == session_id]
