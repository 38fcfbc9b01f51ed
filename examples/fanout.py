"""Fan-out: N slow queries at once take about as long as the slowest one.

    python examples/fanout.py                      # against the embedded local emulator
    python examples/fanout.py --connection NAME    # against a real account (connections.toml)

It runs a few slow queries one after another, then N of them concurrently on one
session, then shows a timeout aborting every running query on the server, and checks
in SQL (QUERY_HISTORY) that nothing was left running. Ctrl-C aborts what is running too.
"""

from __future__ import annotations

import argparse
import sys
import time

import anyio

from asyncsession import AsyncSession, Session

RUNNING_WAITS = (
    "select count(*) from table(information_schema.query_history_by_session()) "
    "where execution_status = 'RUNNING' and query_text like 'select system$wait(%'"
)


async def fan_out(session: AsyncSession, sql: str, n: int) -> float:
    done = 0
    started = time.perf_counter()

    async def one() -> None:
        nonlocal done
        await session.sql(sql).collect()
        done += 1
        bar = "#" * (30 * done // n)
        print(f"\r  [{bar:<30}] {done}/{n}", end="", flush=True)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    print()
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    builder = Session.builder.app_name("asyncsession-fanout")
    if args.connection:
        builder = builder.config("connection_name", args.connection)
    else:
        builder = builder.config("local_testing", True)
    async with builder.create() as session:
        where = args.connection or "the embedded local Snowflake emulator"
        print(f"Connected to {where} (session {session.session_id}).")
        sql = f"select system$wait({args.seconds:g})"

        print(f"\n1. {args.sequential} x `{sql}` one after another:")
        started = time.perf_counter()
        for _ in range(args.sequential):
            await session.sql(sql).collect()
        sequential = time.perf_counter() - started
        print(f"  {sequential:.2f} s ({sequential / args.sequential:.2f} s per query)")

        print(f"\n2. {args.n} x `{sql}` concurrently on one session:")
        concurrent = await fan_out(session, sql, args.n)
        per_query = sequential / args.sequential
        print(
            f"  {concurrent:.2f} s for {args.n} queries "
            f"(one after another would take ~{per_query * args.n:.0f} s)"
        )

        print(f"\n3. {args.n} x `select system$wait(60)` under a {args.timeout:g} s timeout:")
        started = time.perf_counter()
        with anyio.move_on_after(args.timeout):
            await session.collect_many(["select system$wait(60)"] * args.n)
        print(f"  timed out after {time.perf_counter() - started:.2f} s; every query aborted")

        (row,) = await session.sql(RUNNING_WAITS).collect()
        print(f"\nStill running on the server: {row[0]} (checked in QUERY_HISTORY)")
    print("Session closed; nothing left running.")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connection", help="a connections.toml name (default: local emulator)")
    parser.add_argument("-n", type=int, default=100, help="queries to run concurrently")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each query waits")
    parser.add_argument("--sequential", type=int, default=3, help="queries run one by one")
    parser.add_argument("--timeout", type=float, default=1.0, help="timeout for step 3")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        anyio.run(main, parse(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\nInterrupted: running queries were aborted on the server.")
        sys.exit(130)
