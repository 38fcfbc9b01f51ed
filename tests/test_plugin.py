"""The pytest plugin's live mode, run in a child pytest against the emulator reached
through a connections.toml (as a real account would be)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from asyncsession.testing import LocalSnowflake

ROOT = Path(__file__).resolve().parent.parent

SUITE = textwrap.dedent(
    """
    import pytest
    import snowflake.connector

    def test_parameters_reach_the_server(snowflake_connection_parameters):
        with snowflake.connector.connect(**snowflake_connection_parameters) as conn:
            assert conn.cursor().execute("select 1").fetchone()[0] == 1

    @pytest.mark.emulator_only
    def test_marked():
        pass

    def test_inspects_the_emulator(local_snowflake):
        pass
    """
)


def child_pytest(
    tmp_path: Path, sf: LocalSnowflake, *args: str
) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "sfhome"
    home.mkdir()
    toml = home / "connections.toml"
    toml.write_text(sf.connections_toml("live"))
    toml.chmod(0o600)
    (tmp_path / "test_child.py").write_text(SUITE)
    env = {**os.environ, "SNOWFLAKE_HOME": str(home)}
    env.pop("ASYNCSESSION_TEST_CONNECTION", None)
    cmd = [sys.executable, *_under_coverage(env), "-m", "pytest"]
    cmd += [
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
    ]
    cmd += args
    return subprocess.run(
        [*cmd, str(tmp_path / "test_child.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_live_mode_uses_the_connection_and_skips_emulator_tests(
    tmp_path: Path, local_snowflake: LocalSnowflake
) -> None:
    proc = child_pytest(tmp_path, local_snowflake, "--snowflake-connection", "live")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 2 skipped" in proc.stdout


def test_without_a_connection_everything_runs_on_the_emulator(
    tmp_path: Path, local_snowflake: LocalSnowflake
) -> None:
    proc = child_pytest(tmp_path, local_snowflake)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def test_an_unknown_connection_is_a_usage_error(
    tmp_path: Path, local_snowflake: LocalSnowflake
) -> None:
    proc = child_pytest(tmp_path, local_snowflake, "--snowflake-connection", "nope")
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert "unknown connection 'nope'" in proc.stderr


def _under_coverage(env: dict[str, str]) -> list[str]:
    """Measure the child too when this run is measured (make test): the plugin's live
    branches run only there. Its data joins this run's (``make coverage`` combines)."""
    try:
        import coverage
    except ImportError:
        return []
    current = coverage.Coverage.current()
    if current is None:
        return []
    env["COVERAGE_FILE"] = str(Path(current.config.data_file).resolve())
    return ["-m", "coverage", "run", f"--rcfile={ROOT / 'pyproject.toml'}"]
