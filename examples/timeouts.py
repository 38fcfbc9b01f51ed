"""Timeouts: when ``anyio.fail_after`` expires, the query is aborted on the server.

    python examples/timeouts.py                      # against the embedded local emulator
    python examples/timeouts.py --connection NAME    # against a real account (connections.toml)

A cancelled await never leaves its query running on the warehouse: the timeout cancels
the awaiting task, asyncsession aborts the query on the server (within
``cancel_timeout``), and the ``TimeoutError`` reaches you. QUERY_HISTORY shows it.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import anyio

from asyncsession import Session

HISTORY = (
    "select execution_status, error_code, error_message, total_elapsed_time "
    "from table(information_schema.query_history_by_session()) where query_text = ?"
)


async def main(args: argparse.Namespace) -> None:
    builder = Session.builder.app_name("asyncsession-timeouts")
    if args.connection:
        builder = builder.config("connection_name", args.connection)
    else:
        builder = builder.config("local_testing", True)
    async with builder.create() as session:
        # A unique comment makes this very query easy to find in QUERY_HISTORY.
        sql = f"select system$wait({args.seconds:g}) -- timeouts example {uuid.uuid4()}"
        print(f"Running `{sql}` under a {args.timeout:g} s timeout ...")
        started = time.perf_counter()
        try:
            with anyio.fail_after(args.timeout):
                await session.sql(sql).collect()
        except TimeoutError:
            print(f"  TimeoutError after {time.perf_counter() - started:.2f} s")
        else:
            print("  finished before the timeout")

        (status, code, message, elapsed) = (await session.sql(HISTORY, [sql]).collect())[0]
        print(f"QUERY_HISTORY: {status} {code or ''} {message or ''} after {elapsed} ms")
        if status == "FAILED_WITH_ERROR" and code == "000604":
            print("The query was aborted on the server: nothing is left running.")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connection", help="a connections.toml name (default: local emulator)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the query waits")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds before giving up")
    return parser.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))
