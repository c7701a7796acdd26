"""Learning-curve plots (PNG), headless, readable at a glance: every series visible where
values coincide, zero bars drawn, labels whole, the band named."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

MARKERS = "osD^vP*Xh<>"
LINESTYLES = ("-", "--", "-.", ":")
# Sideways offset between series, as a share of the x range: equal values stay apart.
DODGE = 0.012


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def plot_learning_curve(evals: list[dict], path: Path, title: str) -> None:
    """Success against training episodes, with a band of one standard error over the
    point's evaluation episodes."""
    x = np.array([e["episodes_seen"] for e in evals])
    y = np.array([e["success_rate"] for e in evals])
    se = np.array([e.get("stderr", 0.0) for e in evals])
    episodes = evals[-1].get("episodes", "the")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120, layout="constrained")
    ax.plot(x, y, marker="o", label="success rate")
    ax.fill_between(
        x,
        np.clip(y - se, 0, 1),
        np.clip(y + se, 0, 1),
        alpha=0.25,
        label=f"± 1 s.e. over {episodes} evaluation episodes",
    )
    ax.set(xlabel="training episodes", ylabel="evaluation success rate", ylim=(-0.05, 1.05))
    ax.set_title(_wrap(title, 70), fontsize=9)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.savefig(path)
    plt.close(fig)


@dataclass
class Series:
    """One method at one setting of the varied fields, over tasks:
    task label -> evaluation point -> cell (mean, se, seeds)."""

    label: str
    cells: dict[str, dict]


def _style(i: int, n: int) -> dict:
    colors = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return {
        "color": colors(i % colors.N),
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[i % len(LINESTYLES)],  # a line over another leaves gaps
    }


def plot_comparison(
    series: list[Series], tasks: dict[str, str], curves_path: Path, bars_path: Path
) -> None:
    """Learning curves (a panel per task, every series overlaid, ± 1 s.e. over seeds) and
    a bar chart of each series' success at its last evaluation point, per task. `tasks`:
    task sentence -> its short label."""
    n = len(series)
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    width = max(6.4, 4.8 * cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width, 3.4 * rows + 0.3 * n + 0.8),
        dpi=120,
        squeeze=False,
        layout="constrained",
    )
    span = max((max(c) for s in series for c in s.cells.values()), default=0) or 1
    for ax, (task, label) in zip(axes.flat, tasks.items(), strict=False):
        for i, s in enumerate(series):
            cells = s.cells.get(label)
            if not cells:
                continue
            points = sorted(cells)
            x = np.array(points, float) + (i - (n - 1) / 2) * DODGE * span
            y = np.array([cells[p].mean for p in points])
            se = np.array([cells[p].se for p in points])
            style = _style(i, n)
            lw = 1.2 + 2.8 * (n - 1 - i) / max(1, n - 1)  # earlier series wider: both show
            ax.plot(x, y, ms=5, lw=lw, mfc="none", mew=1.4, label=s.label, **style)
            ax.fill_between(
                x, np.clip(y - se, 0, 1), np.clip(y + se, 0, 1), color=style["color"], alpha=0.12
            )
        ax.set(ylim=(-0.08, 1.08), xlabel="training episodes", ylabel="success rate")
        ax.set_title(_wrap(f"{label}: {task}", 55), fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.suptitle(
        _wrap(
            "Success rate at each evaluation point: mean over seeds, band ± 1 standard error "
            "over seeds (series offset slightly sideways, earlier ones drawn wider, so equal "
            "values stay visible)",
            int(width * 13),
        ),
        fontsize=9,
    )
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if len(labels) < n:  # a series absent from the first panel
        handles = [plt.Line2D([], [], mfc="none", **_style(i, n)) for i in range(n)]
        labels = [s.label for s in series]
    fig.legend(handles, labels, loc="outside lower center", fontsize=8, ncols=1 if n > 4 else 2)
    fig.savefig(curves_path)
    plt.close(fig)
    _plot_final(series, tasks, bars_path)


def _plot_final(series: list[Series], tasks: dict[str, str], path: Path) -> None:
    n = len(series)
    width = 0.8 / max(1, n)
    key = "\n".join(_wrap(f"{label}: {task}", 110) for task, label in tasks.items())
    fig, ax = plt.subplots(
        figsize=(max(7.0, 0.45 * n * len(tasks) + 2), 4.6 + 0.3 * n + 0.2 * key.count("\n")),
        dpi=120,
        layout="constrained",
    )
    for i, s in enumerate(series):
        color = _style(i, n)["color"]
        for t, label in enumerate(tasks.values()):
            x = t + (i - (n - 1) / 2) * width
            cells = s.cells.get(label)
            if not cells:
                ax.text(
                    x,
                    0.02,
                    "not run",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    color="0.5",
                )
                continue
            cell = cells[max(cells)]
            ax.bar(x, cell.mean, width, yerr=cell.se, capsize=2, color=color)
            ax.hlines(0.004, x - width / 2, x + width / 2, color=color, lw=2.5)  # a zero shows
            ax.text(
                x,
                min(cell.mean + cell.se, 1) + 0.02,
                f"{cell.mean:.2f} n={cell.seeds}",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=6,
            )
    ax.set_xticks(np.arange(len(tasks)), list(tasks.values()))
    ax.set(ylim=(0, 1.25), ylabel="success rate at the last evaluation point")
    ax.set_xlabel(key, fontsize=7, loc="left")
    ax.set_title(
        "Each series at its last evaluation point: mean over seeds ± 1 standard error (n: seeds)",
        fontsize=9,
    )
    handles = [plt.Rectangle((0, 0), 1, 1, color=_style(i, n)["color"]) for i in range(n)]
    fig.legend(
        handles,
        [s.label for s in series],
        loc="outside lower center",
        fontsize=8,
        ncols=1 if n > 4 else 2,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    plt.close(fig)
