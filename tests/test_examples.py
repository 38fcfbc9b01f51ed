"""The examples run as scripts, as a user would run them, and leave nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from asyncsession.testing import LocalSnowflake
from tests.helpers import running_in_session

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def snowflake_home(tmp_path: Path, local_snowflake: LocalSnowflake) -> dict[str, str]:
    """An environment whose connections.toml has ``[local]``: the test's emulator."""
    toml = tmp_path / "connections.toml"
    toml.write_text(local_snowflake.connections_toml("local"))
    toml.chmod(0o600)
    env = {**os.environ, "SNOWFLAKE_HOME": str(tmp_path)}
    env.pop("SNOWFLAKE_DEFAULT_CONNECTION_NAME", None)
    return env


def run(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@contextmanager
def started(name: str, *args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A suite started in the background (no job control) ignores SIGINT, and its
        # children would inherit that: the example must get its KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


@pytest.mark.emulator_only  # starts its own emulator
def test_quickstart_creates_sessions_three_ways() -> None:
    out = run("quickstart.py")
    for way in ("1. a dict of parameters", "2. connection_name='local'", "3. the default"):
        assert f"{way}" in out
    assert out.count("{'TOTAL': 3, 'GREETING': 'hi'}") == 3


@pytest.mark.emulator_only  # local_testing: the embedded emulator
def test_fanout_runs_on_the_embedded_emulator() -> None:
    out = run("fanout.py", "-n", "5", "--seconds", "0.2", "--sequential", "1", "--timeout", "0.3")
    assert "5/5" in out
    assert "Still running on the server: 0" in out
    assert "Session closed" in out


def test_timeouts_shows_the_server_abort(snowflake_home: dict[str, str]) -> None:
    args = ("--connection", "local", "--seconds", "30", "--timeout", "0.3")
    out = run("timeouts.py", *args, env=snowflake_home)
    assert "TimeoutError after" in out
    assert "QUERY_HISTORY: FAILED_WITH_ERROR 000604 SQL execution canceled" in out
    assert "aborted on the server" in out


def test_fanout_interrupted_leaves_nothing_running(
    local_snowflake: LocalSnowflake, snowflake_home: dict[str, str]
) -> None:
    n = 20
    sql = "select system$wait(3)"
    args = ("--connection", "local", "-n", str(n), "--seconds", "3", "--sequential", "1")

    def concurrent_step(sf: LocalSnowflake) -> list[dict[str, Any]]:
        waits = [q for q in sf.running_queries() if q["sql_text"] == sql]
        return waits if len(waits) >= n else []

    with started("fanout.py", *args, env=snowflake_home) as process:
        running = local_snowflake.wait_until(concurrent_step, timeout=30)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Interrupted" in out
    (session_id,) = {q["session_id"] for q in running}
    for q in running:
        assert local_snowflake.query(q["query_id"])["status"] == "ABORTED"
    assert running_in_session(local_snowflake.connection_parameters, session_id) == []
    assert session_id not in [s["session_id"] for s in local_snowflake.sessions()]
