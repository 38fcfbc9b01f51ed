"""Probes of this process, shared by the soak (``tests/reliability/test_soak.py``) and
the benchmarks: threads, open descriptors, memory (Linux ``/proc``), Python objects, and
polling helpers that wait for them to settle."""

from __future__ import annotations

import gc
import os
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio

from asyncsession._threads import retire_idle_workers


def os_threads() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class ThreadSampler:
    """Samples the OS thread count of this process every 2 ms while active."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, os_threads())
            self._stop.wait(0.002)

    def __enter__(self) -> ThreadSampler:
        self.baseline = os_threads()
        self.peak = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rss_kib() -> int:
    return proc_status_kb("VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_table() -> dict[str, str]:
    """Each open descriptor and what it is (a file, a pipe, ``socket:[inode]``)."""
    table = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            table[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return table


def tcp_by_inode() -> dict[str, str]:
    """``inode -> "local -> remote STATE"`` for this process's IPv4 TCP sockets."""
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}

    def addr(text: str) -> str:
        host, port = text.split(":")
        return f"{'.'.join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))}:{int(port, 16)}"

    found = {}
    with open("/proc/self/net/tcp") as f:
        for line in list(f)[1:]:
            cols = line.split()
            found[cols[9]] = f"{addr(cols[1])} -> {addr(cols[2])} {states.get(cols[3], cols[3])}"
    return found


def new_fds(before: dict[str, str]) -> str:
    tcp = tcp_by_inode()
    lines = []
    for fd, target in sorted(fd_table().items(), key=lambda item: int(item[0])):
        if before.get(fd) != target:
            inode = target[len("socket:[") : -1] if target.startswith("socket:[") else ""
            lines.append(f"  fd {fd}: {target} {tcp.get(inode, '')}".rstrip())
    return "\n".join(lines)


def python_threads() -> int:
    """Threads Python started. Not ``threading._DummyThread``: a thread of the 5.x core's
    native runtime that once logged through Python's ``logging`` stays listed as one for
    as long as it lives, and that runtime's pool is the connector's, not ours to stop."""
    return sum(1 for t in threading.enumerate() if not isinstance(t, threading._DummyThread))


def thread_stacks() -> str:
    """Where each thread but this one is (for failure messages)."""
    frames = sys._current_frames()
    lines = []
    for t in threading.enumerate():
        if t is threading.current_thread() or t.ident not in frames:
            continue
        stack = traceback.extract_stack(frames[t.ident])[-4:]
        where = " <- ".join(
            f"{f.name} ({os.path.basename(f.filename)}:{f.lineno})" for f in reversed(stack)
        )
        lines.append(f"  {t.name}: {where}")
    return "\n".join(lines)


def object_census() -> Counter[str]:
    """How many objects of each type the garbage collector tracks."""
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def holders(type_name: str, depth: int = 4) -> str:
    """What keeps the newest object of ``type_name`` alive (for failure messages)."""
    found = [o for o in gc.get_objects() if type(o).__name__ == type_name]
    if not found:
        return "  (none left)"
    lines: list[str] = []
    obj: object = found[-1]
    skip = {id(found), id(sys._getframe())}
    for level in range(depth):
        referrers = [r for r in gc.get_referrers(obj) if id(r) not in skip]
        skip.update(id(r) for r in referrers)
        if not referrers:
            break
        described = ", ".join(sorted({type(r).__qualname__ for r in referrers}))
        lines.append(f"  {'  ' * level}<- {described}")
        plain = [r for r in referrers if not isinstance(r, (list, dict, tuple))]
        obj = (plain or referrers)[0]
    return "\n".join(lines)


async def settle(predicate: Callable[[], object], deadline: float) -> bool:
    """Poll ``predicate`` until it holds (False at the deadline).

    Each poll first retires asyncsession's idle worker threads (else they end after 10 s
    without work), as the suite's end-of-test check does; busy ones go on.
    """
    with anyio.move_on_after(deadline):
        while True:
            retire_idle_workers()
            if predicate():
                return True
            await anyio.sleep(0.05)
    return False


async def until(predicate: Callable[[], Any], deadline: float = 10.0) -> Any:
    """Wait for ``predicate()`` to be truthy, polling, with a deadline (TimeoutError)."""
    with anyio.fail_after(deadline):
        while not (value := predicate()):  # noqa: ASYNC110 - the state lives in another process or thread
            await anyio.sleep(0.005)
    return value
