"""Reproduce the 5.x core's ``tracing-core`` "RefCell already borrowed" panic.

snowflake-connector-python 5.x only (its Rust core, ``sf_core_python``). Runs against the
local emulator (``asyncsession.testing.LocalSnowflake``); nothing here depends on
asyncsession otherwise. Rust prints the panics on stderr; count them with
``grep -c 'panicked at'``.

    ASYNCSESSION_EMULATOR_PYTHON=/path/to/4.x/venv/bin/python PYTHONPATH=src \\
        .venv5/bin/python docs/upstream/repro_tracing_panic.py direct 2>&1 | grep -c 'panicked at'

Modes:

``direct``  A ``logging.Filter`` on ``snowflake.connector._core`` (level INFO) that calls
            back into the core (``connection.is_closed()``) the first time it sees each
            query's INFO record: one panic per query, deterministic.
``gc``      No code of ours calls the core from logging. The core logger is at INFO with
            an ordinary handler, and closed connections / unclosed cursors are left in
            reference cycles, as any program leaves some. When the cyclic garbage collector
            happens to run inside the core's log callback (any allocation there can start
            it), their finalizers (``SnowflakeConnection.__del__`` -> ``is_closed()``,
            ``ResultSetWrapper.__del__`` -> ``result_set_release``) call the core re-entrantly.
            ``--level warning`` (the default level) for the control: no INFO record reaches
            Python, nothing allocates in the callback, no panic.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time

import snowflake.connector

from asyncsession.testing import LocalSnowflake

CORE_LOGGER = "snowflake.connector._core"


def connect(sf: LocalSnowflake) -> snowflake.connector.SnowflakeConnection:
    return snowflake.connector.connect(
        **sf.connection_parameters, enable_server_session_keep_alive_auto_detection=False
    )


def direct(sf: LocalSnowflake, queries: int) -> int:
    conn = connect(sf)
    armed = threading.local()

    class CallsTheCore(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if getattr(armed, "on", False):
                armed.on = False  # once per query: the call below logs too
                conn.is_closed()  # any call into sf_core (call_proto or log_event) does it
            return True

    core = logging.getLogger(CORE_LOGGER)
    core.setLevel(logging.INFO)
    core.addFilter(CallsTheCore())
    for _ in range(queries):
        cur = conn.cursor()
        armed.on = True
        cur.execute("select 1")
        cur.fetchall()
        cur.close()
    conn.close()
    return queries


def gc_finalizers(sf: LocalSnowflake, seconds: float, level: int, threads: int) -> int:
    core = logging.getLogger(CORE_LOGGER)
    core.setLevel(level)
    # An ordinary handler: formatting a record allocates, so the cyclic collector can start
    # inside the core's log callback (logging.basicConfig(level=logging.INFO) does as much).
    handler = logging.StreamHandler(open("/dev/null", "w"))  # noqa: SIM115
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    core.addHandler(handler)
    core.propagate = False
    stop = time.monotonic() + seconds
    done = [0]
    shared = connect(sf)

    def work() -> None:
        rng = random.Random()
        n = 0
        while time.monotonic() < stop:
            cur = shared.cursor()
            cur.execute("select 1")
            cur.fetchall()
            cur.cycle = cur  # type: ignore[attr-defined]  # unclosed, freed only by the gc
            del cur
            # Some allocations of the program's own, a varying number: else a loop this
            # regular starts the collector at the same few points of each turn.
            _ = [[] for _ in range(rng.randrange(64))]
            n += 1
            if n % 20 == 0:
                # A short-lived connection, closed, but in a reference cycle: its __del__
                # still asks the core is_closed() when the collector frees it.
                conn = connect(sf)
                conn.close()
                conn.cycle = conn  # type: ignore[attr-defined]
                del conn
        done[0] += n

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    shared.close()
    return done[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["direct", "gc"])
    p.add_argument("--level", choices=["info", "warning"], default="info")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    a = p.parse_args()
    level = logging.INFO if a.level == "info" else logging.WARNING
    with LocalSnowflake() as sf:
        if a.mode == "direct":
            n = direct(sf, a.queries)
        else:
            n = gc_finalizers(sf, a.seconds, level, a.threads)
    print(
        f"mode={a.mode} level={a.level} threads={a.threads} queries={n} "
        f"connector={snowflake.connector.__version__} python={sys.version.split()[0]}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
