"""Quickstart: three ways to create a session, then a query with bound parameters.

    python examples/quickstart.py                      # against a local Snowflake emulator
    python examples/quickstart.py --connection NAME    # against a real account

1. a dict of ``snowflake.connector.connect()`` parameters,
2. a named connection from connections.toml,
3. the default connection (``SNOWFLAKE_DEFAULT_CONNECTION_NAME``, else
   ``default_connection_name`` in config.toml, else ``[default]``).

Against the emulator, a temporary ``$SNOWFLAKE_HOME`` holds a connections.toml for it.
Against a real account, way 1 reads ``SNOWFLAKE_ACCOUNT``, ``SNOWFLAKE_USER`` and
``SNOWFLAKE_PASSWORD`` (and is skipped if they are not set).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from asyncsession import Session, SessionCreation


async def show(way: str, creation: SessionCreation) -> None:
    async with creation as session:  # logs in; closes the session on exit
        user = await session.get_current_user()
        rows = await session.sql("select ? + ? as total, ? as greeting", [1, 2, "hi"]).collect()
        print(f"{way}: session {session.session_id} as {user}: {rows[0].as_dict()}")


async def three_ways(params: dict[str, Any] | None, name: str) -> None:
    if params is None:
        print("1. a dict of parameters: skipped (set SNOWFLAKE_ACCOUNT, _USER, _PASSWORD)")
    else:
        await show("1. a dict of parameters", Session.builder.configs(params).create())
    await show(
        f"2. connection_name={name!r}", Session.builder.config("connection_name", name).create()
    )
    await show("3. the default connection", Session.builder.create())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connection", help="a connections.toml name (default: local emulator)")
    args = parser.parse_args(argv)

    if args.connection:
        keys = ("account", "user", "password")
        env = {k: os.environ.get(f"SNOWFLAKE_{k.upper()}") for k in keys}
        params = {k: v for k, v in env.items() if v} if all(env.values()) else None
        anyio.run(three_ways, params, args.connection)
        return

    from asyncsession.testing import LocalSnowflake

    with LocalSnowflake() as emulator, tempfile.TemporaryDirectory() as home:
        toml = Path(home, "connections.toml")
        toml.write_text(emulator.connections_toml("local"))
        toml.chmod(0o600)  # connections.toml holds secrets: others must not read it
        os.environ["SNOWFLAKE_HOME"] = home
        os.environ["SNOWFLAKE_DEFAULT_CONNECTION_NAME"] = "local"
        print(f"A local Snowflake emulator on port {emulator.port}, as [local] in {toml}")
        anyio.run(three_ways, emulator.connection_parameters, "local")


if __name__ == "__main__":
    main(sys.argv[1:])
