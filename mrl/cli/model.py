"""`mrl model`: the MLflow registry. Register a trained model, gate it to champion, roll back, list, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import ParamsOpt, SetOpt, TrackingOpt, fails_cleanly, write_json
from mrl.config import load_config
from mrl.errors import MRLError

app = typer.Typer(no_args_is_help=True, help="The model registry (MLflow): register, promote (the gate), rollback, "
                                              "list, compare.")


@app.command()
@fails_cleanly
def register(
    model: Annotated[Path, typer.Option(help="checkpoint from `mrl train`")],
    metrics: Annotated[Path, typer.Option(help="per-dim metrics JSON from `mrl evaluate`")],
    plot: Annotated[Path | None, typer.Option(help="per-dim plot from `mrl evaluate`")] = None,
    gate: Annotated[bool, typer.Option("--gate/--no-gate", help="also run the promotion gate; aliases move only "
                                                                "if it passes")] = False,
    out: Annotated[Path | None, typer.Option(help="write the registration (and gate decision) as JSON")] = None,
    tracking_uri: TrackingOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Log the run to MLflow and register a model version as `challenger` (--gate: gate it too)."""
    from mrl.registry import register_and_promote, register_run

    cfg = load_config(params, set_ or []).registry
    if gate:
        registration, decision = register_and_promote(model, metrics, plot, cfg, tracking_uri)
        typer.echo(decision.table())
        typer.echo(f"{cfg.model_name} v{registration.version} is champion (and challenger)")
        write_json(out, {"registration": vars(registration), "gate": decision.to_dict()})
        return
    registration = register_run(model, metrics, plot, cfg, tracking_uri)
    typer.echo(f"registered {cfg.model_name} v{registration.version} (run {registration.run_id}) as challenger")
    write_json(out, {"registration": vars(registration)})




@app.command()
@fails_cleanly
def promote(
    version: Annotated[str | None, typer.Option(help="version to gate (default: the challenger)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the gate decision as JSON")] = None,
    tracking_uri: TrackingOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """The gate (MLflow aliases; an index is promoted by `mrl index promote`): make the challenger champion if it
    holds up at every nesting dim; exit 2 naming the dims if not."""
    from mrl.registry import promote_if_better

    cfg = load_config(params, set_ or []).registry
    decision = promote_if_better(cfg.model_name, cfg, version, tracking_uri)
    typer.echo(decision.table())
    typer.echo(f"{cfg.model_name} v{decision.version} is champion")
    write_json(out, decision.to_dict())


@app.command()
@fails_cleanly
def rollback(tracking_uri: TrackingOpt = None, params: ParamsOpt = None, set_: SetOpt = None):
    """Move `champion` back to the version it replaced."""
    from mrl.registry import rollback_model

    cfg = load_config(params, set_ or []).registry
    old, new = rollback_model(cfg.model_name, tracking_uri)
    typer.echo(f"{cfg.model_name}: champion moved from v{old} back to v{new}")


@app.command("list")
@fails_cleanly
def list_(tracking_uri: TrackingOpt = None, params: ParamsOpt = None, set_: SetOpt = None):
    """The registry aliases (champion, challenger) with each version's lineage (data and params digests, git
    commit)."""
    from mrl.registry import aliases, lineage_line, version_lineage

    cfg = load_config(params, set_ or []).registry
    for alias, version in aliases(cfg.model_name, tracking_uri).items():
        lineage = f"  ({lineage_line(version_lineage(cfg.model_name, version, tracking_uri))})" if version else ""
        typer.echo(f"{cfg.model_name}@{alias}: {'v' + version if version else '(none)'}{lineage}")


MetricOpt = Annotated[str | None, typer.Option(help="metric to compare (default: what the gate compares: "
                                                    "registry.primary_metric, nDCG@k for a text adapter)")]
PlotOpt = Annotated[Path | None, typer.Option(help="PNG to write (default: "
                                                   "artifacts/registry/<model>_v<champion>_vs_v<challenger>.png)")]


@app.command()
@fails_cleanly
def compare(metric: MetricOpt = None, plot: PlotOpt = None, tracking_uri: TrackingOpt = None, params: ParamsOpt = None,
            set_: SetOpt = None):
    """Champion vs challenger at every nesting dim: a table and a plot."""
    from mrl.compare import compare_versions, write_comparison_plot

    cfg = load_config(params, set_ or []).registry
    comparison = compare_versions(cfg.model_name, metric, tracking_uri, cfg.primary_metric)
    typer.echo(f"{cfg.model_name} {comparison.metric}: champion v{comparison.champion} vs challenger "
               f"v{comparison.challenger} (delta = challenger - champion)")
    typer.echo(comparison.table())
    path = plot or Path("artifacts/registry") / f"{cfg.model_name}_v{comparison.champion}_vs_v{comparison.challenger}.png"
    typer.echo(f"plot: {write_comparison_plot(comparison, path)}")


@fails_cleanly
def models(
    compare_: Annotated[bool, typer.Option("--compare", help="champion vs challenger per dim: a table and a plot")]
    = False,
    metric: MetricOpt = None,
    plot: PlotOpt = None,
    tracking_uri: TrackingOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """The old `mrl models` (`mrl model list`; with --compare, `mrl model compare`)."""
    if not compare_ and (metric or plot):
        raise MRLError("--metric and --plot go with --compare")
    if compare_:
        compare(metric, plot, tracking_uri, params, set_)
    else:
        list_(tracking_uri, params, set_)
