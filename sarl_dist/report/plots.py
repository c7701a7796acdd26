"""Learning-curve plots (PNG), headless."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_learning_curve(evals: list[dict], path: Path, title: str) -> None:
    """Greedy success against training episodes, with a band of one standard error."""
    x = np.array([e["episodes_seen"] for e in evals])
    y = np.array([e["success_rate"] for e in evals])
    se = np.array([e.get("stderr", 0.0) for e in evals])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(x, y, marker="o")
    ax.fill_between(x, np.clip(y - se, 0, 1), np.clip(y + se, 0, 1), alpha=0.25)
    ax.set(
        xlabel="training episodes", ylabel="greedy success rate", ylim=(-0.02, 1.02), title=title
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_comparison(table, tasks, methods, curves_path: Path, bars_path: Path) -> None:
    """Learning curves (one panel per task, methods overlaid, ± 1 s.e. over seeds) and a
    bar chart of each method's success at its last evaluation point, per task."""
    cols = min(5, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), dpi=120, squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, task in zip(axes.flat, tasks, strict=False):
        for method in methods:
            cells = table.get((task, method))
            if not cells:
                continue
            x = np.array(sorted(cells))
            y = np.array([cells[p].mean for p in x])
            se = np.array([cells[p].se for p in x])
            ax.plot(x, y, marker="o", ms=3, color=colors[method], label=method)
            ax.fill_between(
                x, np.clip(y - se, 0, 1), np.clip(y + se, 0, 1), color=colors[method], alpha=0.2
            )
        ax.set(ylim=(-0.02, 1.02), xlabel="training episodes", ylabel="success")
        ax.set_title(task, fontsize=7, wrap=True)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(curves_path)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) * len(methods) / 2), 4), dpi=120)
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        finals = [table.get((t, method), {}) for t in tasks]
        means = [c[max(c)].mean if c else np.nan for c in finals]
        errs = [c[max(c)].se if c else 0.0 for c in finals]
        x = np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, means, width, yerr=errs, capsize=2, color=colors[method], label=method)
    ax.set_xticks(np.arange(len(tasks)), [t[:40] for t in tasks], rotation=30, ha="right")
    ax.tick_params(axis="x", labelsize=6)
    ax.set(ylim=(0, 1.05), ylabel="final greedy success")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(bars_path)
    plt.close(fig)
