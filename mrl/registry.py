"""Model registry: register a challenger, promote it to champion through a per-dim gate, roll back.

Aliases are the only mutable state: `challenger` (latest registered candidate) and `champion` (what
serves). Every promotion records the version it replaced in the tag `mrl.previous_champion`, which is
what `rollback_model` follows. The gate compares before it writes, so a refused or failed promotion
leaves `champion` where it was. Each version's description (Markdown, shown on its registry page) says
whether the gate promoted it and why, with its metrics per nesting dim.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from mrl.config import RegistryConfig
from mrl.errors import MRLError
from mrl.tracking import (
    GATE_METRIC_TAG,
    LINEAGE_TAGS,
    MODEL_URI_TAG,
    PER_DIM_PREFIX,
    client,
    log_training_run,
    per_dim_markdown,
)

CHALLENGER, CHAMPION = "challenger", "champion"
PREVIOUS_TAG = "mrl.previous_champion"


@dataclass
class Registration:
    model_name: str
    version: str
    run_id: str


@dataclass
class GateDecision:
    promoted: bool
    version: str
    previous_champion: str | None
    # one per dim: dim, challenger, champion (None for a first model), reference (the bar: champion - tolerance
    # or the floor), ok
    rows: list[dict] = field(default_factory=list)
    regressed_dims: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        if self.previous_champion:
            lines = [f"| dim | challenger v{self.version} | champion v{self.previous_champion} | bar | ok |",
                     "|---:|---:|---:|---:|:---:|"]
            lines += [f"| {r['dim']} | {r['challenger']:.4f} | {r['champion']:.4f} | {r['reference']:.4f} | "
                      f"{'yes' if r['ok'] else 'NO'} |" for r in self.rows]
        else:
            lines = [f"| dim | challenger v{self.version} | floor | ok |", "|---:|---:|---:|:---:|"]
            lines += [f"| {r['dim']} | {r['challenger']:.4f} | {r['reference']:.4f} | {'yes' if r['ok'] else 'NO'} |"
                      for r in self.rows]
        return "\n".join(lines)

    def verdict(self, metric: str, cfg: RegistryConfig) -> str:
        """One sentence: promoted or not, and why."""
        if self.previous_champion:
            bar = f"champion v{self.previous_champion} - {cfg.tolerance}"
        else:
            bar = f"floor {cfg.min_first}"
        if self.promoted:
            replaced = f", replacing v{self.previous_champion}" if self.previous_champion else " (first champion)"
            return f"Promoted to champion{replaced}: {metric} >= {bar} at every dim."
        kept = f"v{self.previous_champion} stays champion" if self.previous_champion else "there is no champion"
        return f"Not promoted: {metric} below {bar} at dims {self.regressed_dims}; {kept}."


def alias_version(mlflow_client, name: str, alias: str) -> str | None:
    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def aliases(model_name: str, tracking_uri: str | None = None) -> dict[str, str | None]:
    c = client(tracking_uri)
    return {alias: alias_version(c, model_name, alias) for alias in (CHAMPION, CHALLENGER)}


def version_lineage(model_name: str, version: str, tracking_uri: str | None = None) -> dict[str, str]:
    """The lineage tags of a model version (data file and digests, params digest, git commit; see LINEAGE_TAGS)."""
    tags = client(tracking_uri).get_model_version(model_name, version).tags
    return {key: tags[key] for key in LINEAGE_TAGS if tags.get(key)}


def lineage_line(lineage: dict[str, str]) -> str:
    """One line for people: "data dataset.npz sha256 1f3a9c0e, params 77b2c1d4, git 5e0c9a1b" (short digests)."""
    parts = []
    if "mrl.data" in lineage:
        parts.append(f"data {Path(lineage['mrl.data']).name}"
                     + (f" sha256 {lineage['mrl.data_sha256'][:8]}" if "mrl.data_sha256" in lineage else "")
                     + (f" dvc md5 {lineage['mrl.data_dvc_md5'][:8]}" if "mrl.data_dvc_md5" in lineage else ""))
    if "mrl.params_sha256" in lineage:
        parts.append(f"params {lineage['mrl.params_sha256'][:8]}")
    if "mrl.git_commit" in lineage:
        parts.append(f"git {lineage['mrl.git_commit'][:8]}")
    return ", ".join(parts) or "no lineage recorded"


def register_model(run_id: str, model_name: str, tracking_uri: str | None = None,
                   set_challenger: bool = True) -> Registration:
    """Register the model logged by `run_id` as a new version and (by default) point `challenger` at it."""
    c = client(tracking_uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise MRLError(f"run {run_id}: not found in {mlflow.get_tracking_uri()}") from None
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise MRLError(f"run {run_id}: has no logged model (tag {MODEL_URI_TAG})")
    lineage = {k: v for k, v in run.data.tags.items() if k in LINEAGE_TAGS and v}
    version = str(mlflow.register_model(model_uri, model_name, tags={"mrl.run_id": run_id, **lineage}).version)
    c.update_model_version(model_name, version, describe_version(
        "Not gated yet: `mrl model promote` runs the per-dim gate.", run_per_dim(run)))
    if set_challenger:
        c.set_registered_model_alias(model_name, CHALLENGER, version)
    return Registration(model_name, version, run_id)


def run_per_dim(run) -> dict[int, dict[str, float]]:
    """{dim: {metric: value}} of the evaluation logged with the run: the names come from the per_dim/ curves
    (training's own per-dim keys such as loss_d8 are not evaluation), the values from the flat keys."""
    metrics, names = run.data.metrics, run_per_dim_names(run)
    dims = json.loads(run.data.tags.get("mrl.nesting_dims", "[]"))
    per_dim = {m: {n: metrics[f"{n}_d{m}"] for n in names if f"{n}_d{m}" in metrics} for m in dims}
    return {m: row for m, row in per_dim.items() if row}


def describe_version(verdict: str, per_dim: dict[int, dict[str, float]], gate_table: str = "") -> str:
    """The version's description in the registry (Markdown): the gate's verdict, its table, every metric per dim."""
    parts = [f"**{verdict}**"]
    if gate_table:
        parts += ["### Gate", gate_table]
    if per_dim:
        parts += ["### Metrics per nesting dim", per_dim_markdown(per_dim)]
    return "\n\n".join(parts)


def require_version(mlflow_client, model_name: str, version: str) -> None:
    """A one-line error, not MLflow's traceback, for a version the registry does not have."""
    try:
        mlflow_client.get_model_version(model_name, version)
    except MlflowException:
        raise MRLError(f"{model_name}: no model version {version!r} in the registry") from None


def _dim_metrics(mlflow_client, model_name: str, version: str, metric: str) -> dict[int, float]:
    run_id = mlflow_client.get_model_version(model_name, version).run_id
    metrics = mlflow_client.get_run(run_id).data.metrics
    dims = json.loads(mlflow_client.get_run(run_id).data.tags.get("mrl.nesting_dims", "[]"))
    missing = [m for m in dims if f"{metric}_d{m}" not in metrics]
    if not dims or missing:
        raise MRLError(f"{model_name} version {version}: run {run_id} has no {metric} for dims {missing or '(none)'}")
    return {m: metrics[f"{metric}_d{m}"] for m in dims}


IMAGE_DEFAULT_METRIC = "knn_top1"  # registry.primary_metric's default: an image (classification) metric


def gate_metric(mlflow_client, model_name: str, version: str, champion: str | None, configured: str) -> str:
    """The metric the gate compares: registry.primary_metric, except for a text adapter while it is the image default
    knn_top1 (which a text evaluation never has): then the adapter's nDCG@k (`ndcg_at_<text.eval_k>`). Challenger and
    champion must be models of one kind: a text adapter is not gated against an image model."""
    def run_of(v: str):
        return mlflow_client.get_run(mlflow_client.get_model_version(model_name, v).run_id)

    run = run_of(version)
    kind = run.data.tags.get("mrl.kind", "images")
    if champion and champion != version:
        theirs = run_of(champion).data.tags.get("mrl.kind", "images")
        if theirs != kind:
            raise MRLError(f"{model_name} v{version} embeds {kind} but champion v{champion} embeds {theirs}: "
                           "register each kind under its own registry.model_name")
    if configured == IMAGE_DEFAULT_METRIC and (own := run.data.tags.get(GATE_METRIC_TAG)):
        return own  # a vectors adapter: the neighbour recall its evaluation reports
    if kind != "text" or configured != IMAGE_DEFAULT_METRIC:
        return configured
    ndcg = sorted(name for name in run_per_dim_names(run) if name.startswith("ndcg_at_"))
    if not ndcg:
        raise MRLError(f"{model_name} v{version}: a text adapter's run without ndcg_at_<k> metrics; set "
                       "registry.primary_metric to one of its metrics (e.g. ndcg_at_10)")
    return ndcg[0]


def run_per_dim_names(run) -> list[str]:
    """The evaluation metrics logged per dim with the run (the per_dim/ curves)."""
    return sorted(k.removeprefix(PER_DIM_PREFIX) for k in run.data.metrics if k.startswith(PER_DIM_PREFIX))


def promote_if_better(model_name: str, cfg: RegistryConfig, version: str | None = None,
                      tracking_uri: str | None = None) -> GateDecision:
    """Gate the challenger (or `version`): champion only if, at every dim the champion has, its
    primary metric >= champion's - tolerance; the first model needs min_first at every dim.
    Raises MRLError listing the regressed dims when refused; champion is then untouched."""
    c = client(tracking_uri)
    version = version or alias_version(c, model_name, CHALLENGER)
    if version is None:
        raise MRLError(f"{model_name}: no '{CHALLENGER}' alias to promote; run `mrl model register` first")
    require_version(c, model_name, version)
    champion = alias_version(c, model_name, CHAMPION)
    if champion == version:
        return GateDecision(True, version, champion)
    cfg = cfg.model_copy(update={"primary_metric": gate_metric(c, model_name, version, champion, cfg.primary_metric)})
    ours = _dim_metrics(c, model_name, version, cfg.primary_metric)
    theirs = _dim_metrics(c, model_name, champion, cfg.primary_metric) if champion else {}
    reference = {m: v - cfg.tolerance for m, v in theirs.items()} if champion else {m: cfg.min_first for m in ours}
    rows = [{"dim": m, "challenger": ours.get(m, float("nan")), "champion": theirs.get(m), "reference": ref,
             "ok": m in ours and ours[m] >= ref} for m, ref in sorted(reference.items())]
    decision = GateDecision(all(r["ok"] for r in rows), version, champion, rows,
                            [r["dim"] for r in rows if not r["ok"]])
    record_gate(c, model_name, decision, cfg)
    if not decision.promoted:
        against = f"champion v{champion} - {cfg.tolerance}" if champion else f"floor {cfg.min_first}"
        detail = ", ".join(f"d{r['dim']}: {r['challenger']:.4f} < {r['reference']:.4f}" for r in rows if not r["ok"])
        raise MRLError(f"{model_name} v{version} not promoted: {cfg.primary_metric} below {against} at dims "
                       f"{decision.regressed_dims} ({detail})")
    # MLflow has no compare-and-swap on aliases: re-read right before moving it, so a gate decided against a
    # champion that another gate replaced meanwhile does not overwrite it.
    now = alias_version(c, model_name, CHAMPION)
    if now != champion:
        raise MRLError(f"{model_name}: champion moved from v{champion} to v{now} while v{version} was gated; "
                       "run the gate again")
    if champion:
        c.set_model_version_tag(model_name, version, PREVIOUS_TAG, champion)
    c.set_registered_model_alias(model_name, CHAMPION, version)
    return decision


def record_gate(c, model_name: str, decision: GateDecision, cfg: RegistryConfig) -> None:
    """Before any alias moves: the gate's table and plot on the challenger's run, and its verdict in the
    version's description, so the registry page says why a version is (not) champion."""
    # Here, not at the top: every stage reads the registry, and only the gate draws (mrl/plots.py would be a DVC
    # dep of them all).
    from mrl.plots import gate_figure

    run = c.get_run(c.get_model_version(model_name, decision.version).run_id)
    stem = f"gate/{cfg.primary_metric}_vs_{'v' + decision.previous_champion if decision.previous_champion else 'floor'}"
    c.log_text(run.info.run_id, decision.table() + "\n", f"{stem}.md")
    figure = gate_figure(decision, cfg.primary_metric)
    try:
        c.log_figure(run.info.run_id, figure, f"{stem}.png")
    finally:
        # (already imported by the figure; here so that reading the registry never imports it)
        import matplotlib.pyplot as plt

        plt.close(figure)
    c.set_tag(run.info.run_id, "mrl.gate", "promoted" if decision.promoted else "refused")
    c.update_model_version(model_name, decision.version, describe_version(
        decision.verdict(cfg.primary_metric, cfg), run_per_dim(run), decision.table()))


def rollback_model(model_name: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """Move `champion` back to the version it replaced. Returns (from_version, to_version)."""
    c = client(tracking_uri)
    current = alias_version(c, model_name, CHAMPION)
    if current is None:
        raise MRLError(f"{model_name}: has no '{CHAMPION}' alias to roll back")
    previous = c.get_model_version(model_name, current).tags.get(PREVIOUS_TAG)
    if not previous:
        raise MRLError(f"{model_name}: champion v{current} has no previous champion to roll back to")
    c.set_registered_model_alias(model_name, CHAMPION, previous)
    return current, previous


def register_run(model_path: str | Path, metrics_path: str | Path, plot_path: str | Path | None,
                 cfg: RegistryConfig, tracking_uri: str | None = None, set_challenger: bool = True) -> Registration:
    """Log the trained, evaluated model as an MLflow run and register it as a new version."""
    run_id = log_training_run(model_path, metrics_path, plot_path, tracking_uri, cfg.experiment)
    return register_model(run_id, cfg.model_name, tracking_uri, set_challenger)


def register_and_promote(model_path: str | Path, metrics_path: str | Path, plot_path: str | Path | None,
                         cfg: RegistryConfig, tracking_uri: str | None = None) -> tuple[Registration, GateDecision]:
    """The pipeline's register step: log the run, register a version, gate it, and only when it passes move
    both aliases to it. A refusal (MRLError) or any failure leaves `challenger` and `champion` as they were."""
    registration = register_run(model_path, metrics_path, plot_path, cfg, tracking_uri, set_challenger=False)
    decision = promote_if_better(cfg.model_name, cfg, registration.version, tracking_uri)
    client(tracking_uri).set_registered_model_alias(cfg.model_name, CHALLENGER, registration.version)
    return registration, decision
