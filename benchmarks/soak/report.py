"""The soak's report: what went wrong (by kind), asyncsession's WARNING records, the
samples of threads/descriptors/RSS, and the block of figures printed pass or fail."""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from benchmarks.probes import open_fds, python_threads, rss_kib


class Failure(AssertionError):
    """An outcome the soak does not accept (recorded; the run goes on)."""

    def __init__(self, where: str, detail: object) -> None:
        super().__init__(f"{where}: {detail}")
        self.detail = str(detail)


class Problems:
    """What went wrong, counted by kind; the first few in full (with a traceback)."""

    KEEP = 12

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.first: list[str] = []

    def add(self, kind: str, text: str, error: BaseException | None = None, n: int = 1) -> None:
        self.kinds[kind] += n
        if self.kinds[kind] == n and len(self.first) < self.KEEP:
            if error is not None and not isinstance(error, Failure):
                text += "\n" + "".join(traceback.format_exception(error)[-8:])
            self.first.append(text)

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def report(self) -> str:
        counts = "\n".join(f"  {n} x {kind}" for kind, n in self.kinds.most_common())
        return f"problems by kind:\n{counts}\nfirst of each:\n" + "\n".join(self.first)


@dataclass
class Tally:
    ops: Counter[str] = field(default_factory=Counter)
    #: Per SQL statement: ok, cancelled (our own scope), QueryCancelledError (reason),
    #: SessionClosedError, sql error.
    outcomes: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)

    def outcome(self, what: str, n: int = 1) -> None:
        self.outcomes[what] += n


class WarningCounter(logging.Handler):
    """asyncsession's WARNING records (an unconfirmed abort, a failed logout), by template."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.kinds: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def emit(self, record: logging.LogRecord) -> None:
        template = str(record.msg)
        self.kinds[template] += 1
        self.first.setdefault(template, f"{record.threadName}: {record.getMessage()}")


@dataclass
class Sample:
    at: float
    threads: int
    fds: int
    rss_kib: int


def sample_now(started: float) -> Sample:
    return Sample(time.monotonic() - started, python_threads(), open_fds(), rss_kib())


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def rss_trend(samples: list[Sample]) -> float:
    """RSS growth in MiB per second, by least squares over ``samples``."""
    if len(samples) < 2:
        return 0.0
    mean_at = sum(s.at for s in samples) / len(samples)
    mean_rss = sum(s.rss_kib for s in samples) / len(samples)
    spread = sum((s.at - mean_at) ** 2 for s in samples)
    if not spread:
        return 0.0
    slope = sum((s.at - mean_at) * (s.rss_kib - mean_rss) for s in samples) / spread
    return slope / 1024


def peak_of(samples: list[Sample]) -> Sample:
    return Sample(
        0,
        max(s.threads for s in samples),
        max(s.fds for s in samples),
        max(s.rss_kib for s in samples),
    )


@dataclass
class Bounds:
    py_blocks_growth: int
    rss_growth_mib: float
    rss_second_half_mib: float


@dataclass
class Run:
    """What one soak measured, for :func:`figures`."""

    backend: str
    seed: int
    elapsed: float
    warmup_seconds: float
    tally: Tally
    samples: list[Sample]
    base: Sample
    at_deadline: Sample
    end: Sample
    #: RSS growth from the baseline to the end, MiB; the second-half trend (MiB/s) and
    #: what it comes to over that half (MiB).
    growth: float
    trend: float
    second_half: float
    blocks: int
    grown: list[tuple[str, int]]
    ours: dict[str, int]
    base_sessions: list[int]
    end_sessions: list[int]
    end_running: int
    warnings: WarningCounter
    problems: Problems


def figures(run: Run, bounds: Bounds) -> str:
    """The block of figures printed after every soak, pass or fail."""
    import snowflake.connector

    from benchmarks.soak.workload import WORKERS

    tally, base, at_deadline, end = run.tally, run.base, run.at_deadline, run.end
    peak = peak_of(run.samples)

    def rss_at(fraction: float) -> int:
        at = fraction * run.elapsed
        return min(run.samples, key=lambda s: abs(s.at - at)).rss_kib

    statements = sum(tally.outcomes.values())
    ops = sum(tally.ops.values())
    return "\n".join(
        [
            f"soak figures: connector {snowflake.connector.__version__}, {run.backend}, "
            f"seed {run.seed}, {run.elapsed:.0f} s ({WORKERS} workers, "
            f"warm-up {run.warmup_seconds:g} s)",
            f"  operations  {ops}: " + ", ".join(f"{k} {v}" for k, v in tally.ops.most_common()),
            f"  statements  {statements}: "
            + ", ".join(f"{k} {v}" for k, v in tally.outcomes.most_common()),
            "  events      " + ", ".join(f"{k} {v}" for k, v in sorted(tally.events.items())),
            f"  threads     baseline {base.threads}, peak {peak.threads}, "
            f"at deadline {at_deadline.threads}, end {end.threads}",
            f"  fds         baseline {base.fds}, peak {peak.fds}, "
            f"at deadline {at_deadline.fds}, end {end.fds}",
            f"  RSS MiB     baseline {mib(base.rss_kib)}, "
            + ", ".join(f"{f:.0%} {mib(rss_at(f))}" for f in (0.2, 0.4, 0.6, 0.8))
            + f", at deadline {mib(at_deadline.rss_kib)}, end {mib(end.rss_kib)}, "
            f"peak {mib(peak.rss_kib)}",
            f"              end - baseline {run.growth:+.1f} (bound {bounds.rss_growth_mib:g}); "
            f"second-half trend {run.trend * 60:+.2f}/min = {run.second_half:+.1f} over it "
            f"(bound {bounds.rss_second_half_mib:g})",
            f"  Python heap allocated blocks {run.blocks:+,} "
            f"(bound {bounds.py_blocks_growth:,}); "
            f"objects grown most: {', '.join(f'{k} {v:+}' for k, v in run.grown) or 'none'}; "
            f"asyncsession objects grown: {sum(run.ours.values())}",
            f"  server      sessions baseline {len(run.base_sessions)}, "
            f"end {len(run.end_sessions)}; running queries at end {run.end_running}",
            f"  warnings    asyncsession WARNING records: {run.warnings.count}",
            f"  problems    {sum(run.problems.kinds.values())}"
            + "".join(f"; {n} x {kind}" for kind, n in run.problems.kinds.most_common()),
        ]
    )
