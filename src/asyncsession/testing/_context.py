"""The state every part of the emulator shares: who may log in, sessions, SQL, faults."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._engine import Engine
from ._faults import Faults
from ._protocol import MASTER_TOKEN_VALIDITY, SESSION_TOKEN_VALIDITY
from ._state import Registry


class Emulator:
    def __init__(
        self,
        *,
        user: str,
        password: str | None,
        admin_token: str,
        session_token_validity: float = SESSION_TOKEN_VALIDITY,
        master_token_validity: float = MASTER_TOKEN_VALIDITY,
    ) -> None:
        self.user = user
        self.password = password
        self.admin_token = admin_token
        self.registry = Registry(
            session_token_validity=session_token_validity,
            master_token_validity=master_token_validity,
        )
        self.engine = Engine()
        self.faults = Faults()
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="emulator-sql")
        # One login opens its SQL connections at a time (see sessions.login).
        self.open_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task the emulator keeps a reference to until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def release_engine_if_idle(self, session: Any) -> None:
        """Close a logged-out session's SQL connections once its last query has ended."""
        if session.session_id not in self.registry.sessions and not self.registry.running(
            session.session_id
        ):
            self.engine.close_session(session)
