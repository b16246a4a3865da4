"""Champion vs challenger, dim by dim: the table and plot behind `mrl model compare` and the gate's plot.

The numbers are the flat per-dim metrics each version's run logged (knn_top1_d16), the same ones the gate
reads, so what this shows is what the gate decided on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.plots import per_dim_figure
from mrl.registry import CHALLENGER, CHAMPION, _dim_metrics, alias_version, gate_metric
from mrl.tracking import client

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Comparison:
    model_name: str
    metric: str
    champion: str  # version numbers
    challenger: str
    rows: list[dict]  # one per dim either version has: dim, champion, challenger, delta (None where one lacks it)

    def table(self) -> str:
        def cell(value: float | None, fmt: str = ".4f") -> str:
            return "-" if value is None else f"{value:{fmt}}"

        lines = [f"| dim | champion v{self.champion} | challenger v{self.challenger} | delta |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['dim']} | {cell(r['champion'])} | {cell(r['challenger'])} | {cell(r['delta'], '+.4f')} |"
                  for r in self.rows]
        return "\n".join(lines)


def compare_versions(model_name: str, metric: str | None, tracking_uri: str | None = None,
                     primary_metric: str = "knn_top1") -> Comparison:
    """The champion's and the challenger's `metric` (None: the one the gate compares, see `gate_metric`) at every
    nesting dim. One-line MRLError naming what is missing: the registered model, or either alias."""
    c = client(tracking_uri)
    try:
        c.get_registered_model(model_name)
    except MlflowException:
        raise MRLError(f"{model_name}: no registered model of that name in {c.tracking_uri}") from None
    versions = {alias: alias_version(c, model_name, alias) for alias in (CHAMPION, CHALLENGER)}
    hint = {CHAMPION: "promote a version first (`mrl model promote`)", CHALLENGER: "register one (`mrl model register`)"}
    for alias, version in versions.items():
        if version is None:
            raise MRLError(f"{model_name}: no '{alias}' alias to compare; {hint[alias]}")
    metric = metric or gate_metric(c, model_name, versions[CHALLENGER], versions[CHAMPION], primary_metric)
    champion, challenger = (_dim_metrics(c, model_name, versions[a], metric) for a in (CHAMPION, CHALLENGER))
    rows = [{"dim": m, "champion": champion.get(m), "challenger": challenger.get(m),
             "delta": challenger[m] - champion[m] if m in champion and m in challenger else None}
            for m in sorted(champion.keys() | challenger.keys())]
    return Comparison(model_name, metric, versions[CHAMPION], versions[CHALLENGER], rows)


def comparison_figure(comparison: Comparison) -> Figure:
    def values(key: str) -> dict[int, float]:
        return {r["dim"]: r[key] for r in comparison.rows if r[key] is not None}

    return per_dim_figure({f"champion v{comparison.champion}": values("champion"),
                           f"challenger v{comparison.challenger}": values("challenger")},
                          comparison.metric, f"{comparison.model_name}: {comparison.metric} per dim")


def write_comparison_plot(comparison: Comparison, path: Path) -> Path:
    # matplotlib: ~0.9 s to import; only the plot needs it
    import matplotlib.pyplot as plt


    fig = comparison_figure(comparison)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return path
