"""What every benchmark shares: timing, peak memory, the machine, the results file."""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One measured figure next to its baseline (measured in the same run, or a fixed goal)."""

    name: str
    value: float
    baseline_name: str
    baseline_value: float
    goal: str
    met: bool
    unit: str = "s"
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("inf")

    def show(self, value: float) -> str:
        return f"{value:.3f} s" if self.unit == "s" else f"{value:,.0f} {self.unit}"


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The fastest of `repeat` runs, in seconds (the least disturbed by a noisy machine)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}"
    )


def write_table(name: str, title: str, rows: list[Row], extra: list[str] | None = None) -> Path:
    """Write (and return) results/NAME.md: a markdown table with the machine and the date."""
    RESULTS.mkdir(exist_ok=True)
    lines = [
        f"## {title}",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "",
        "| measure | value | baseline | baseline value | ratio | goal | met |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.show(r.value)} | {r.baseline_name} | {r.show(r.baseline_value)} | "
            f"{r.ratio:.2f}× | {r.goal} | {'yes' if r.met else 'NO'}{(' — ' + r.note) if r.note else ''} |"
        )
    lines.extend(["", *(extra or [])])
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
