"""``async with`` closes with ``aclose()``: for objects that are their own context
manager (``ClosesOnExit``), and for what ``builder.create()`` and
``builder.create_pool()`` return (``Creation``: awaitable once, or an async context
manager that closes what it made on exit)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar


class _Closable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class ClosesOnExit:
    """``async with obj:`` gives ``obj`` and awaits ``obj.aclose()`` on exit."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self: _Closable,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Creation(Generic[C]):
    """Awaitable (gives the object) and async context manager (closes it on exit)."""

    def __init__(self, make: Callable[[], Awaitable[C]]) -> None:
        self._make = make
        self._made: C | None = None

    def __await__(self) -> Generator[Any, None, C]:
        return self._make().__await__()

    async def __aenter__(self) -> C:
        self._made = await self._make()
        return self._made

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._made is not None:
            await self._made.aclose()
