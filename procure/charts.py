"""Charts of the reports (PNG, matplotlib without a screen): titled, axes in € and days."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from models.errors import InputError, Problem


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    return plt


def _euros(values: list[str]) -> list[float]:
    # Plotting needs floats; the figures in the tables stay Decimal.
    return [float(Decimal(v)) for v in values]


def _money_axis(axis: Any, currency: str) -> None:
    from matplotlib.ticker import FuncFormatter

    symbol = "€" if currency == "EUR" else f"{currency} "
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{symbol}{value:,.0f}"))


def draw(report: dict[str, Any], path: Path, currency: str = "EUR") -> Path:
    """Draw a report as a PNG at path; returns the path."""
    if path.suffix.lower() != ".png":
        raise InputError(Problem("a chart is written as PNG: name the file .png", field="--chart"))
    if not path.parent.exists():
        raise InputError(Problem(f"no folder {path.parent}", field="--chart"))
    plt = _pyplot()
    name = report["report"]
    period = report["period"]
    span = f"{period['from'] or 'start'} to {period['to'] or 'today'}"
    money_label = f"{currency} (€)" if currency == "EUR" else currency
    if name == "costs":
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        for ax, key, label in zip(
            axes, ("by_cost_centre", "by_supplier"), ("cost centre", "supplier"), strict=True
        ):
            rows = report["tables"][key]
            names = [r.get("cost_centre") or r.get("supplier") for r in rows]
            ax.barh(names, _euros([r["spend"] for r in rows]), color="#3b6ea5")
            ax.set_title(f"Spend by {label}")
            ax.set_xlabel(money_label)
            _money_axis(ax.xaxis, currency)
            ax.invert_yaxis()
    elif name == "savings":
        fig, ax = plt.subplots(figsize=(8, 5))
        rows = report["tables"]["by_sourcing"]
        names = [r["sourcing"] for r in rows]
        ax.bar(names, _euros([r["list"] for r in rows]), label="at list price", color="#c9d6e8")
        ax.bar(names, _euros([r["paid"] for r in rows]), label="paid", color="#3b6ea5")
        ax.set_ylabel(money_label)
        _money_axis(ax.yaxis, currency)
        ax.set_title("Paid vs list price, by sourcing")
        ax.legend()
    elif name == "risk":
        fig, ax = plt.subplots(figsize=(10, 5))
        rows = report["tables"]["by_kind"]
        positions = range(len(rows))
        ax.barh(
            [p - 0.2 for p in positions],
            _euros([r["incurred"] for r in rows]),
            height=0.4,
            label="incurred",
            color="#c0392b",
        )
        ax.barh(
            [p + 0.2 for p in positions],
            _euros([r["avoided"] for r in rows]),
            height=0.4,
            label="avoided",
            color="#27ae60",
        )
        ax.set_yticks(list(positions), [r["label"] for r in rows])
        ax.set_xlabel(money_label)
        _money_axis(ax.xaxis, currency)
        ax.set_title(
            f"€{Decimal(report['totals']['incurred']):,.0f} incurred, "
            f"€{Decimal(report['totals']['avoided']):,.0f} avoided by involving purchasing early"
        )
        ax.invert_yaxis()
        ax.legend()
    elif name == "cycle-times":
        fig, ax = plt.subplots(figsize=(9, 5))
        rows = [r for r in report["tables"]["by_stage"] if r["mean_hours"] is not None]
        ax.bar(
            [r["stage"] for r in rows],
            [r["mean_hours"] / 24 for r in rows],
            label="mean",
            color="#3b6ea5",
        )
        ax.scatter(
            [r["stage"] for r in rows],
            [r["p90_hours"] / 24 for r in rows],
            label="90th percentile",
            color="#c0392b",
            zorder=3,
        )
        ax.set_ylabel("days")
        ax.set_title("Time from a stage opening to its decision")
        ax.legend()
    else:
        raise InputError(Problem(f"no chart for report {name!r}"))
    fig.suptitle(f"{report['title']} ({span})", fontsize=12, fontweight="bold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
