"""The emulator process: CLI, capacity, and no server outliving its launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from asyncsession import Session
from asyncsession.testing import EmulatorError, LocalSnowflake
from tests.emulator.raw import RawClient
from tests.helpers import connect

# Tests of the emulator itself.
pytestmark = pytest.mark.emulator_only

LAUNCH_AND_HANG = """
import sys, time
from asyncsession.testing import LocalSnowflake
sf = LocalSnowflake().start()
print(sf._process.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"emulator process {pid} outlived its launcher")
        time.sleep(0.05)


def test_server_dies_with_a_killed_launcher() -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCH_AND_HANG], stdout=subprocess.PIPE, text=True
    )
    try:
        assert launcher.stdout is not None
        server_pid = int(launcher.stdout.readline())
        assert _alive(server_pid)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        _wait_gone(server_pid)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        if launcher.stdout is not None:
            launcher.stdout.close()


def test_cli_prints_parameters_and_stops_on_sigint() -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "asyncsession.testing", "--connection-name", "mylocal"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        lines = []
        for line in cli.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        output = "".join(lines)
        assert '"protocol": "http"' in output
        assert "[mylocal]" in output
        port = int(output.split("http://127.0.0.1:")[1].split()[0])
        cli.send_signal(signal.SIGINT)
        assert cli.wait(20) == 0
        with pytest.raises(OSError, match="refused"):
            RawClient(f"http://127.0.0.1:{port}")
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        if cli.stdout is not None:
            cli.stdout.close()


def test_a_broken_python_gives_a_clear_error() -> None:
    emulator = LocalSnowflake(python=sys.executable, startup_timeout=20)
    emulator.python = "/bin/false"
    with pytest.raises(EmulatorError, match="ASYNCSESSION_EMULATOR_PYTHON"):
        emulator.start()
    assert not emulator.is_running


def test_200_waits_on_one_session_all_run_at_once(local_snowflake: LocalSnowflake) -> None:
    raw = RawClient(local_snowflake.url)
    tag = f"capacity-{uuid.uuid4().hex[:6]}"
    try:
        raw.query(f"alter session set query_tag = '{tag}'")
        ids = [
            raw.query("select system$wait(5)", async_exec=True)["data"]["queryId"]
            for _ in range(200)
        ]
        running = {q["query_id"] for q in local_snowflake.running_queries()}
        assert set(ids) <= running  # all 200 running on the server at the same moment
    finally:
        raw.query(f"select system$cancel_all_queries({raw.session_id})")
        raw.logout()
    statuses = {
        q["status"]
        for q in local_snowflake.queries()
        if q["query_tag"] == tag and "wait" in q["sql_text"]
    }
    assert statuses == {"ABORTED"}


def test_snowflake_connection_parameters_fixture(
    snowflake_connection_parameters: dict[str, Any], local_snowflake: LocalSnowflake
) -> None:
    params = snowflake_connection_parameters
    assert params == local_snowflake.connection_parameters
    with connect(params) as conn:
        assert conn.session_id in [s["session_id"] for s in local_snowflake.sessions()]
    params["user"] = "changed"  # a fresh dict per test: the emulator's stays as it was
    assert local_snowflake.connection_parameters["user"] == "test"


@pytest.mark.anyio
async def test_async_with_local_snowflake_and_its_latency() -> None:
    async with LocalSnowflake(latency_ms=150) as sf:
        assert sf.is_running
        assert sf.fault_counts()["latency_ms"] == 150
        async with Session.builder.configs(sf.connection_parameters).create() as session:
            started = time.monotonic()
            assert (await session.sql("select 1").collect())[0][0] == 1
            assert time.monotonic() - started >= 0.15  # one request, at least the latency
    assert not sf.is_running
