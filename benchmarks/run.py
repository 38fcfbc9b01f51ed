"""Benchmarks of asyncsession against its peers, on the local Snowflake emulator.

    python -m benchmarks                    # both connector generations, 20 ms latency
    python -m benchmarks --quick --repeat 1 --latency-ms 2 --generations current

The connector 4.x run happens in ``.venv``, the 5.x run in ``.venv5``: the runner
measures its own generation in-process and re-invokes itself (``--worker``) with the
other interpreter, then merges the JSON results and writes ``RESULTS.md``, plots and
``results.json`` into ``--out`` (default: this directory).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EMULATOR_ENV = "ASYNCSESSION_EMULATOR_PYTHON"
DEFAULT_PYTHONS = {4: ROOT / ".venv" / "bin" / "python", 5: ROOT / ".venv5" / "bin" / "python"}


def own_generation() -> int:
    # Read from the metadata, not asyncsession._driver.connector_major(): this
    # orchestrating process does not import the connector (5.x starts threads on import).
    return int(importlib.metadata.version("snowflake-connector-python").split(".")[0])


def all_scenarios() -> dict[str, Any]:
    from benchmarks.pool import POOL_SCENARIOS
    from benchmarks.scenarios import SCENARIOS

    return {**SCENARIOS, **POOL_SCENARIOS}


def parse(argv: list[str] | None) -> argparse.Namespace:
    from benchmarks.scenarios import SLOW_SCENARIOS

    SCENARIOS = all_scenarios()
    default = [name for name in SCENARIOS if name not in SLOW_SCENARIOS]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latency-ms", type=float, default=20.0, help="injected per-request latency")
    p.add_argument("--repeat", type=int, default=3, help="repeats per measurement (median)")
    p.add_argument("--quick", action="store_true", help="minimal sizes (CI)")
    p.add_argument(
        "--scenarios",
        default=",".join(default),
        help=f"comma-separated subset; the slow profile adds {','.join(SLOW_SCENARIOS)}",
    )
    p.add_argument(
        "--generations", default="4,5", help="'4,5', '4', '5' or 'current' (this interpreter)"
    )
    p.add_argument("--python4", default=str(DEFAULT_PYTHONS[4]), help="interpreter with 4.x")
    p.add_argument("--python5", default=str(DEFAULT_PYTHONS[5]), help="interpreter with 5.x")
    p.add_argument("--out", default=str(HERE), help="where RESULTS.md, plots, JSON go")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite the report from OUT/results.json"
    )
    p.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def run_generation(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen scenarios with this interpreter's connector, on a private emulator."""

    from asyncsession.testing import LocalSnowflake
    from benchmarks import scenarios as sc

    names = args.scenarios.split(",")
    threads_before = {t.ident for t in threading.enumerate()}
    emulator = LocalSnowflake(latency_ms=args.latency_ms)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    emulator.start()
    try:
        ctx = sc.Context(emulator, args.latency_ms, sc.Sizes.for_run(args.quick))
        for name in names:
            t = time.perf_counter()
            print(f"[{sc.GENERATION}.x] {name} ...", file=sys.stderr, flush=True)
            results[name] = all_scenarios()[name](ctx, args.repeat)
            timings[name] = time.perf_counter() - t
            print(f"[{sc.GENERATION}.x] {name} {timings[name]:.1f} s", file=sys.stderr, flush=True)
        leftover_server = len(emulator.running_queries())
    finally:
        emulator.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leftover = [
            t.name
            for t in threading.enumerate()
            if t.ident not in threads_before and not t.daemon and t.is_alive()
        ]
        if not leftover:
            break
        time.sleep(0.05)
    return {
        "meta": {
            "generation": sc.GENERATION,
            "connector": sc.CONNECTOR_VERSION,
            "python": platform.python_version(),
            "anyio": importlib.metadata.version("anyio"),
            "latency_ms": args.latency_ms,
            "repeat": args.repeat,
            "quick": args.quick,
            "scenario_seconds": timings,
            "leftover_threads": leftover,
            "leftover_server_queries": leftover_server,
            "emulator_running": emulator.is_running,
            "anyio_backend": "asyncio",
        },
        "scenarios": results,
    }


def run_other(gen: int, args: argparse.Namespace, python: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [python, "-m", "benchmarks.run", "--worker", str(out)]
        cmd += ["--latency-ms", str(args.latency_ms), "--repeat", str(args.repeat)]
        cmd += ["--scenarios", args.scenarios] + (["--quick"] if args.quick else [])
        env = dict(os.environ)
        if gen >= 5:
            # The emulator (fakesnow) needs connector 4.x: run it with the 4.x interpreter.
            env[EMULATOR_ENV] = env.get(EMULATOR_ENV) or args.python4
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, timeout=900)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    own = own_generation()
    if args.report_only:
        from benchmarks.report import write_report

        merged: dict[str, Any] = json.loads((Path(args.out) / "results.json").read_text())
        write_report(merged, Path(args.out), plots=not args.no_plots)
        return merged
    if args.worker:
        Path(args.worker).write_text(json.dumps(run_generation(args)))
        return {}
    wanted = (
        [own] if args.generations == "current" else [int(g) for g in args.generations.split(",")]
    )
    pythons = {4: args.python4, 5: args.python5}
    if own >= 5 and 4 in wanted and not os.environ.get(EMULATOR_ENV):
        os.environ[EMULATOR_ENV] = args.python4
    if own >= 5 and not os.environ.get(EMULATOR_ENV):
        os.environ[EMULATOR_ENV] = args.python4
    runs: dict[str, Any] = {}
    for gen in sorted(wanted):
        if gen == own:
            runs[str(gen)] = run_generation(args)
        elif Path(pythons[gen]).exists():
            runs[str(gen)] = run_other(gen, args, pythons[gen])
        else:
            print(
                f"no interpreter for connector {gen}.x at {pythons[gen]}; skipped", file=sys.stderr
            )
    merged = {
        "machine": {
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
        },
        "args": {"latency_ms": args.latency_ms, "repeat": args.repeat, "quick": args.quick},
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(merged, indent=1, sort_keys=True))
    from benchmarks.report import write_report

    write_report(merged, out, plots=not args.no_plots)
    print(f"wrote {out / 'RESULTS.md'}", file=sys.stderr)
    return merged


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
