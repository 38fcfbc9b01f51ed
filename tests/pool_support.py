"""Helpers for the pool tests."""

from __future__ import annotations

from typing import Any

from asyncsession import Session, SessionBuilder
from asyncsession.testing import LocalSnowflake


def builder_for(sf: LocalSnowflake, **options: Any) -> SessionBuilder:
    return Session.builder.configs({**sf.connection_parameters, **options})


def server_session_ids(sf: LocalSnowflake) -> set[int]:
    return {int(s["session_id"]) for s in sf.sessions()}


def queries_of(sf: LocalSnowflake, session_id: int) -> list[dict[str, Any]]:
    return [q for q in sf.queries() if q["session_id"] == session_id]
