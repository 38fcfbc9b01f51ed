"""``python -m asyncsession.testing``: run a local Snowflake in the foreground."""

from __future__ import annotations

import argparse
import json
import signal
import threading

from ._launcher import LocalSnowflake


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m asyncsession.testing",
        description="Run a local Snowflake emulator on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument(
        "--connection-name", default="local", help="for the connections.toml section"
    )
    parser.add_argument(
        "--session-token-validity", type=float, default=3600.0, help="seconds (default 3600)"
    )
    parser.add_argument(
        "--master-token-validity",
        type=float,
        default=14400.0,
        help="seconds a session may stay idle (default 14400)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    # Ctrl-C and SIGTERM both just ask the loop below to end (no KeyboardInterrupt races).
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with LocalSnowflake(
        port=args.port,
        latency_ms=args.latency_ms,
        session_token_validity=args.session_token_validity,
        master_token_validity=args.master_token_validity,
    ) as emulator:
        print("Local Snowflake emulator running at", emulator.url)
        print("\nconnection parameters:")
        print(json.dumps(emulator.connection_parameters, indent=2))
        print("\nconnections.toml section:\n")
        print(emulator.connections_toml(args.connection_name))
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5) and emulator.is_running:
            pass


if __name__ == "__main__":
    main()
