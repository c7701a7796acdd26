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
