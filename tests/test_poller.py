"""The status poller's wake-ups (our own logic; no connector needed).

Paced polling through the connector is in test_executor.py and reliability/.
"""

from __future__ import annotations

import anyio
import pytest

from asyncsession._errors import QueryCancelledError
from asyncsession._poller import StatusPoller, Wake
from asyncsession._registry import RunningQuery
from tests.helpers import both_backends

pytestmark = [pytest.mark.anyio, both_backends]


class Status:
    """A status call that answers RUNNING, or blocks until released when ``hold`` is set."""

    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.asked: list[str] = []
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, query_id: str) -> tuple[str, bool]:
        self.asked.append(query_id)
        self.entered.set()
        if self.hold:
            await self.release.wait()
        return "RUNNING", True


async def test_a_wake_set_before_the_poll_skips_the_status_request() -> None:
    status = Status()
    poller = StatusPoller(status)
    wake = Wake()
    wake.set()
    with anyio.fail_after(5):
        assert await poller._look_unless_woken("q1", 60.0, wake) is None
    assert status.asked == []


async def test_a_wake_gives_up_the_status_request_under_way() -> None:
    status = Status(hold=True)
    poller = StatusPoller(status)
    wake = Wake()
    seen: list[object] = []

    async def look() -> None:
        seen.append(await poller._look_unless_woken("q1", 0.0, wake))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(look)
            await status.entered.wait()
            wake.set()
    assert seen == [None]
    assert status.asked == ["q1"]


async def test_an_aborted_query_woken_while_waiting_raises_without_a_status_request() -> None:
    status = Status()
    poller = StatusPoller(status)
    query = RunningQuery("select 1", query_id="q1")
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await poller.wait(query)
        except QueryCancelledError as e:
            outcome.append(e)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            while not isinstance(query.wake, Wake):
                await anyio.lowlevel.checkpoint()
            query.cancel_reason = "cancel_all()"
            query.wake.set()
    assert [e.reason for e in outcome if isinstance(e, QueryCancelledError)] == ["cancel_all()"]


async def test_a_wake_without_an_abort_makes_the_waiter_look_again() -> None:
    status = Status()
    poller = StatusPoller(status)
    query = RunningQuery("select 1", query_id="q1")
    first = Wake()
    query.wake = first
    first.set()  # woken, but nothing aborted it: the waiter goes on with a fresh Wake

    async def waiter() -> None:
        await poller.wait(query)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            while query.wake is first or not status.asked:  # noqa: ASYNC110 - this loop's tasks
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert status.asked
    assert status.asked[0] == "q1"
