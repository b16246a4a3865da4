"""Model registry: register a challenger, promote it to champion through a per-dim gate, roll back.

Aliases are the only mutable state: `challenger` (latest registered candidate) and `champion` (what
serves). Every promotion records the version it replaced in the tag `mrl.previous_champion`, which is
what `rollback_model` follows. The gate compares before it writes, so a refused or failed promotion
leaves `champion` where it was.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mrl.config import RegistryConfig
from mrl.errors import MRLError
from mrl.tracking import MODEL_URI_TAG, client, log_training_run

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
    rows: list[dict] = field(default_factory=list)  # one per dim: dim, challenger, champion/floor, ok
    regressed_dims: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        against = "champion" if self.previous_champion else "floor"
        lines = [f"| dim | challenger | {against} | ok |", "|---:|---:|---:|:---:|"]
        lines += [f"| {r['dim']} | {r['challenger']:.4f} | {r['reference']:.4f} | {'yes' if r['ok'] else 'NO'} |"
                  for r in self.rows]
        return "\n".join(lines)


def alias_version(mlflow_client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def aliases(model_name: str, tracking_uri: str | None = None) -> dict[str, str | None]:
    c = client(tracking_uri)
    return {alias: alias_version(c, model_name, alias) for alias in (CHAMPION, CHALLENGER)}


def register_model(run_id: str, model_name: str, tracking_uri: str | None = None,
                   set_challenger: bool = True) -> Registration:
    """Register the model logged by `run_id` as a new version and (by default) point `challenger` at it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise MRLError(f"run {run_id}: not found in {mlflow.get_tracking_uri()}") from None
    model_uri = run.data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise MRLError(f"run {run_id}: has no logged model (tag {MODEL_URI_TAG})")
    version = str(mlflow.register_model(model_uri, model_name, tags={"mrl.run_id": run_id}).version)
    if set_challenger:
        c.set_registered_model_alias(model_name, CHALLENGER, version)
    return Registration(model_name, version, run_id)


def _dim_metrics(mlflow_client, model_name: str, version: str, metric: str) -> dict[int, float]:
    run_id = mlflow_client.get_model_version(model_name, version).run_id
    metrics = mlflow_client.get_run(run_id).data.metrics
    dims = json.loads(mlflow_client.get_run(run_id).data.tags.get("mrl.nesting_dims", "[]"))
    missing = [m for m in dims if f"{metric}_d{m}" not in metrics]
    if not dims or missing:
        raise MRLError(f"{model_name} version {version}: run {run_id} has no {metric} for dims {missing or '(none)'}")
    return {m: metrics[f"{metric}_d{m}"] for m in dims}


def promote_if_better(model_name: str, cfg: RegistryConfig, version: str | None = None,
                      tracking_uri: str | None = None) -> GateDecision:
    """Gate the challenger (or `version`): champion only if, at every dim the champion has, its
    primary metric >= champion's - tolerance; the first model needs min_first at every dim.
    Raises MRLError listing the regressed dims when refused; champion is then untouched."""
    c = client(tracking_uri)
    version = version or alias_version(c, model_name, CHALLENGER)
    if version is None:
        raise MRLError(f"{model_name}: no '{CHALLENGER}' alias to promote; run `mrl register` first")
    champion = alias_version(c, model_name, CHAMPION)
    if champion == version:
        return GateDecision(True, version, champion)
    ours = _dim_metrics(c, model_name, version, cfg.primary_metric)
    if champion is None:
        reference = {m: cfg.min_first for m in ours}
    else:
        reference = {m: v - cfg.tolerance for m, v in _dim_metrics(c, model_name, champion, cfg.primary_metric).items()}
    rows = [{"dim": m, "challenger": ours.get(m, float("nan")), "reference": ref,
             "ok": m in ours and ours[m] >= ref} for m, ref in sorted(reference.items())]
    decision = GateDecision(all(r["ok"] for r in rows), version, champion, rows,
                            [r["dim"] for r in rows if not r["ok"]])

    run_id = c.get_model_version(model_name, version).run_id
    c.log_text(run_id, decision.table(), f"gate/{cfg.primary_metric}_vs_{'v' + champion if champion else 'floor'}.md")
    c.set_tag(run_id, "mrl.gate", "promoted" if decision.promoted else "refused")
    if not decision.promoted:
        against = f"champion v{champion} - {cfg.tolerance}" if champion else f"floor {cfg.min_first}"
        detail = ", ".join(f"d{r['dim']}: {r['challenger']:.4f} < {r['reference']:.4f}" for r in rows if not r["ok"])
        raise MRLError(f"{model_name} v{version} not promoted: {cfg.primary_metric} below {against} at dims "
                       f"{decision.regressed_dims} ({detail})")
    if champion:
        c.set_model_version_tag(model_name, version, PREVIOUS_TAG, champion)
    c.set_registered_model_alias(model_name, CHAMPION, version)
    return decision


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
