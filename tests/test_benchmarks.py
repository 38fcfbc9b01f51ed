"""The benchmark harness runs and produces its result structure (timings never asserted).

One tiny run of every scenario (``--quick``, one repeat, 2 ms latency) with this
interpreter's connector, in a subprocess, so the harness cannot rot unnoticed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "latency",
    "fanout",
    "fanout_large",
    "cancel",
    "loop_lag",
    "aclose",
    "stream",
    "import",
    "pool_lease",
    "pool_fastapi",
)
METRICS = {
    "latency": {"p50_ms", "p99_ms"},
    "fanout": {"wall_s", "peak_threads", "extra_threads"},
    "fanout_large": {"wall_s", "extra_threads", "lag_max_ms", "server_overlap"},
    "cancel": {"abort_sent_ms", "server_stopped_ms", "await_returned_ms"},
    "loop_lag": {"lag_p50_ms", "lag_p99_ms", "lag_max_ms"},
    "aclose": {"close_returned_ms", "server_zero_ms"},
    "stream": {"rows_per_s", "peak_rss_large_mb", "rss_growth_large_mb"},
    "import": {"wall_ms"},
    "pool_lease": {"p50_ms", "p99_ms"},
    "pool_fastapi": {"requests_per_s", "p50_ms", "p99_ms"},
}
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

# The harness runs against an emulator of its own.
pytestmark = pytest.mark.emulator_only


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--repeat", "1", "--latency-ms", "2"]
    cmd += ["--generations", "current", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    merged = json.loads((out / "results.json").read_text())
    return merged, out


def _run(merged: dict[str, Any]) -> dict[str, Any]:
    (run,) = merged["runs"].values()
    return run  # type: ignore[no-any-return]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_result_structure(quick_run: tuple[dict[str, Any], Path], scenario: str) -> None:
    result = _run(quick_run[0])["scenarios"][scenario]
    assert isinstance(result["params"], dict)
    assert result["peers"]
    for peer, metrics in result["peers"].items():
        assert METRICS[scenario] <= set(metrics), (peer, metrics)
        for values in metrics.values():
            assert len(values) >= 1
            assert all(v is None or isinstance(v, (int, float)) for v in values)
    if scenario in ("latency", "fanout", "cancel", "aclose"):
        assert "asyncsession" in result["peers"]


def test_cancel_reaches_server_and_nothing_is_left(quick_run: tuple[dict[str, Any], Path]) -> None:
    run = _run(quick_run[0])
    cancel = run["scenarios"]["cancel"]["peers"]["asyncsession"]
    assert all(v is not None for v in cancel["server_stopped_ms"])
    meta = run["meta"]
    assert meta["leftover_threads"] == []
    assert meta["leftover_server_queries"] == 0
    assert meta["emulator_running"] is False


def test_report_written(quick_run: tuple[dict[str, Any], Path]) -> None:
    merged, out = quick_run
    text = (out / "RESULTS.md").read_text()
    assert "## Targets" in text
    assert "## 8. Session pool" in text
    assert f"{merged['machine']['nproc']} CPUs" in text
    assert len(list(out.glob("*.png"))) == (6 if HAS_MATPLOTLIB else 0)


def test_report_without_plots(quick_run: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    from benchmarks.report import write_report

    assert write_report(quick_run[0], tmp_path, plots=False) == []
    assert (tmp_path / "RESULTS.md").exists()
    assert not list(tmp_path.glob("*.png"))
