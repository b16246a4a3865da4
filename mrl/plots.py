"""Plots over the nesting dims: an evaluation's metrics (mrl/evaluate.py, mrl/text/evaluate.py), versions side by side
(mrl/compare.py) and what the registry's gate compared (mrl/registry.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mrl.data.artifact import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_per_dim(per_dim: dict[int, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib  # here, not at the top: pyplot takes ~0.5 s to import and only the plot needs it

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    dims = list(per_dim)
    metrics = list(per_dim[dims[0]])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in metrics:
        ax.plot(dims, [per_dim[m][name] for m in dims], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(m) for m in dims])
    ax.set_xlabel("embedding prefix size (dims)")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def per_dim_figure(series: dict[str, dict[int, float]], metric: str, title: str,
                   bar: dict[int, float] | None = None, bar_label: str = "") -> Figure:
    """One line per version over the prefix size (log2 axis, as the evaluation plot), and the gate's bar dashed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    dims = sorted({m for values in series.values() for m in values} | set(bar or {}))
    for label, values in series.items():
        ax.plot(sorted(values), [values[m] for m in sorted(values)], marker="o", label=label)
    if bar:
        ax.plot(sorted(bar), [bar[m] for m in sorted(bar)], linestyle="--", color="grey", label=bar_label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(m) for m in dims])
    ax.set_xlabel("embedding prefix size (dims)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gate_figure(decision, metric: str) -> Figure:
    """What the gate compared (a mrl.registry.GateDecision): the challenger, the champion (if any) and the bar it
    had to clear."""
    series = {f"challenger v{decision.version}": {r["dim"]: r["challenger"] for r in decision.rows}}
    if decision.previous_champion:
        series[f"champion v{decision.previous_champion}"] = {r["dim"]: r["champion"] for r in decision.rows}
    bar_label = "bar (champion - tolerance)" if decision.previous_champion else "floor (first champion)"
    verdict = "promoted" if decision.promoted else f"refused at dims {decision.regressed_dims}"
    return per_dim_figure(series, metric, f"gate: v{decision.version} {verdict}",
                          {r["dim"]: r["reference"] for r in decision.rows}, bar_label)
