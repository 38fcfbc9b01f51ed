"""The emulator's HTTP server: Snowflake's wire protocol over fakesnow, as its own process.

Run by ``LocalSnowflake`` as ``python -m asyncsession.testing._server``; it prints one
``READY`` line with its port, and exits when its standard input closes (the launcher
died), so no server outlives the process that started it.

Where things live: wire constants and reply bodies in ``_protocol``; login, tokens,
heartbeats and logout in ``_sessions``; the query lifecycle in ``_queries``; the
statements answered without DuckDB in ``_statements`` (one entry each); transactions in
``_transactions``; query history in ``_history``; faults in ``_faults``; the admin API in
``_admin``; sessions', queries' and tokens' state in ``_state``; SQL on DuckDB in
``_engine`` and large results in ``_results``; the shared state in ``_context`` and HTTP
plumbing in ``_http``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading

from starlette.applications import Starlette
from starlette.types import ASGIApp

from . import _admin, _queries, _sessions
from ._context import Emulator
from ._faults import FaultMiddleware
from ._protocol import (
    ADMIN_TOKEN_ENV,
    MASTER_TOKEN_VALIDITY,
    READY_PREFIX,
    SESSION_TOKEN_VALIDITY,
)


def build_app(emulator: Emulator) -> ASGIApp:
    routes = _sessions.routes(emulator) + _queries.routes(emulator) + _admin.routes(emulator)
    return FaultMiddleware(
        Starlette(routes=routes),
        emulator.faults,
        on_fault=lambda path, headers, body: _sessions.count_faulted_login(
            emulator, path, headers, body
        ),
    )


def _exit_when_stdin_closes() -> None:
    try:
        while sys.stdin.buffer.read(1024):
            pass
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="asyncsession-emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", default="test")
    parser.add_argument("--password", default=None)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--session-token-validity", type=float, default=SESSION_TOKEN_VALIDITY)
    parser.add_argument("--master-token-validity", type=float, default=MASTER_TOKEN_VALIDITY)
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args(argv)
    admin_token = os.environ.get(ADMIN_TOKEN_ENV, "")

    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say so, and
    # without it a reply's head and body wait on the client's delayed ACK (~40 ms each).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    sock.set_inheritable(True)

    emulator = Emulator(
        user=args.user,
        password=args.password,
        admin_token=admin_token,
        session_token_validity=args.session_token_validity,
        master_token_validity=args.master_token_validity,
    )
    emulator.faults.latency = args.latency_ms / 1000
    config = uvicorn.Config(
        build_app(emulator),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=120,
    )
    if args.watch_stdin:
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    print(
        READY_PREFIX + json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
