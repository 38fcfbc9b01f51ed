"""Start a task that belongs to no task group: the background worker of an awaited pool.

``pool = await builder.create_pool()`` returns a pool that must keep logging in and
out after the call returned, with no task group of the caller to run in. asyncio has
``loop.create_task``; trio has system tasks. The task must catch its own errors (a trio
system task that raises crashes the run), and its owner awaits its end when closing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

_tasks: set[asyncio.Task[None]] = set()  # strong references: asyncio keeps weak ones


def start_detached(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``fn()`` as a task of the current event loop (asyncio or trio), owned by nobody."""
    import asyncio  # here: keeps ``import asyncsession`` off asyncio (see ``_threads``)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        import trio

        trio.lowlevel.spawn_system_task(fn, context=contextvars.copy_context())
        return
    task = loop.create_task(fn())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
