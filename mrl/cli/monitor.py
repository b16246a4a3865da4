"""`mrl drift` (a window of embeddings against the reference, Evidently) and `mrl retrain` (start the training
pipeline: what drift.on_drift runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import MilvusOpt, ParamsOpt, SetOpt, TrackingOpt, fails_cleanly
from mrl.config import load_config
from mrl.errors import MRLError


def drift(
    current: Annotated[Path, typer.Option(help="current window: the service's query-log directory, a .npy array, a "
                                               "dataset artifact (.npz, embedded with the reference's model) or a "
                                               "Parquet embeddings table")],
    reference: Annotated[Path | None, typer.Option(help="drift reference (default: the served collection's, "
                                                        "saved at promotion)")] = None,
    split: Annotated[str | None, typer.Option(help="only this split of a dataset window (train | test)")] = None,
    out: Annotated[Path, typer.Option(help="directory for report.html and summary.json")] = Path("artifacts/drift/report"),
    workspace: Annotated[Path | None, typer.Option(help="Evidently workspace for the snapshot "
                                                        "[params: drift.workspace]")] = None,
    no_workspace: Annotated[bool, typer.Option("--no-workspace", help="do not add a snapshot")] = False,
    action: Annotated[bool, typer.Option("--action/--no-action", help="on drift, start drift.on_drift")] = True,
    milvus_uri: MilvusOpt = None,
    tracking_uri: TrackingOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Compare a window of embeddings with the reference at each funnel prefix (Evidently).
    Exit 0: no drift; 3: drift; 2: bad input (never reported as drift); 4: drift, but the retrain action failed."""
    from mrl.drift import EXIT_DRIFT, format_result, monitor

    try:
        cfg = load_config(params, set_ or [])
        ws = None if no_workspace else (workspace or Path(cfg.drift.workspace))
        result = monitor(cfg, current, out, reference, split, ws, milvus_uri, tracking_uri, log=typer.echo)
    except MRLError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_result(result))
    typer.echo(f"report:  {result.report_html}\nsummary: {result.summary_json}")
    if ws is not None:
        typer.echo(f"history: evidently ui --workspace {ws} --port 8001   (http://127.0.0.1:8001; 8000 is mrl serve)")
    if not result.drifted:
        raise typer.Exit(0)
    if action:
        from mrl.retrain import on_drift
        from pipelines.launch import launchers

        try:
            typer.echo(on_drift(cfg, result.as_dict(), tracking_uri or "", milvus_uri or "", launchers(),
                                log=typer.echo, window=str(current)))
        except MRLError as e:
            typer.echo(f"error: drift found, but the retrain action failed: {e}", err=True)
            raise typer.Exit(4) from None
    raise typer.Exit(EXIT_DRIFT)


@fails_cleanly
def retrain(
    how: Annotated[str, typer.Option(help="local | kfp | dvc | github | auto (kfp when a KFP host is set, else dvc)")]
    = "auto",
    input: Annotated[str | None, typer.Option("--input", help="raw data [params: ingest.input]")] = None,
    tracking_uri: TrackingOpt = None,
    milvus_uri: MilvusOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Start the training pipeline: what drift.on_drift runs, and what the retrain workflow calls. --set
    overrides reach the pipeline's steps (local, kfp); dvc repro reads params.yaml itself, so they are refused there."""
    from mrl.retrain import resolve_how
    from mrl.retrain import retrain as run
    from pipelines.launch import launchers

    cfg = load_config(params, set_ or [])
    if set_ and resolve_how(cfg, how) == "dvc":
        raise MRLError("--set: dvc repro reads params.yaml, not these overrides; edit params.yaml instead")
    typer.echo(run(cfg, how, input or "", tracking_uri or "", milvus_uri or "", launchers=launchers(),
                   log=typer.echo))
