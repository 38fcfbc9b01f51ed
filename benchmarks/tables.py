"""The report's numbers and Markdown tables, shared by ``report.py`` and ``pool.py``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

Run = dict[str, Any]
Scenario = dict[str, Any]


def med(values: list[float | None] | None) -> float | None:
    """Median over repeats; ``None`` if any repeat had no value (e.g. never stopped)."""
    if not values or any(v is None for v in values):
        return None
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return statistics.median(clean) if clean else None


def fmt(value: float | None, digits: int = 1, none: str = "never") -> str:
    if value is None:
        return none
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def metric(run: Run, scenario: str, peer: str, key: str) -> float | None:
    try:
        return med(run["scenarios"][scenario]["peers"][peer][key])
    except KeyError:
        return None


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def per_generation(
    runs: list[tuple[str, Run]],
    scenario: str,
    header: list[str] | Callable[[Scenario], list[str]],
    rows: Callable[[Run, Scenario], list[list[str]]],
    *,
    caption: Callable[[Scenario], str] | None = None,
    after: Callable[[Run, Scenario], list[str]] | None = None,
) -> list[str]:
    """One table per connector generation that ran ``scenario``: ``**4.x** (caption)``,
    the table, then what ``after`` adds."""
    lines: list[str] = []
    for gen, run in runs:
        sc = run["scenarios"].get(scenario)
        if not sc:
            continue
        lines += [f"**{gen}** ({caption(sc)})" if caption else f"**{gen}**", ""]
        lines += table(header(sc) if callable(header) else header, rows(run, sc))
        if after:
            lines += after(run, sc)
    return lines
