"""`mrl pipeline`: the Kubeflow pipelines (training, video, drift) on kfp.local, a KFP cluster, or compiled to YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mrl.cli.common import MilvusOpt, ParamsOpt, TrackingOpt, fails_cleanly
from mrl.config import load_config
from mrl.errors import MRLError

app = typer.Typer(no_args_is_help=True, help="Run or compile the Kubeflow pipelines (training, video, drift).")
RunnerOpt = Annotated[Literal["subprocess", "docker"], typer.Option(
    help="kfp.local runner: each step a subprocess here, or a container of the project image (`make image`) through a "
         "Docker API (Docker, or podman's: `make podman-socket`)")]


@app.command("run")
@fails_cleanly
def pipeline_run(
    params: Annotated[Path, typer.Option("--params", "-p", help="params.yaml passed to every step")] = Path("params.yaml"),
    host: Annotated[str | None, typer.Option(help="KFP API URL: submit the compiled YAML there instead of "
                                             "running locally")] = None,
    input_path: Annotated[str, typer.Option("--input", help="raw data for ingest [params: ingest.input]")] = "",
    tracking_uri: TrackingOpt = None,
    milvus_uri: MilvusOpt = None,
    pipeline_root: Annotated[Path, typer.Option(help="kfp.local outputs")] = Path("artifacts/kfp"),
    runner: RunnerOpt = "subprocess",
):
    """Ingest -> validate -> train -> evaluate -> register and gate -> promote the index (kfp.local or KFP).
    With ingest.source: video, the video pipeline: ingest videos -> validate frames -> segment with the champion ->
    validate segments -> promote the segments index."""
    cfg = load_config(params)  # fail here, not three steps in, on a bad params file
    text = params.read_text()
    video = cfg.ingest.source == "video"
    if host:
        from pipelines.launch import submit

        run_id = submit(host, text, tracking_uri or "", cfg.registry.experiment, input_path=input_path,
                        milvus_uri=milvus_uri or "", video=video)
        typer.echo(f"submitted {'video' if video else 'training'} pipeline run {run_id} to {host}")
        return
    from mrl.retrieval.milvus_index import resolve_milvus_uri
    from mrl.tracking import resolve_tracking_uri
    from pipelines.launch import run_local
    from pipelines.run import run_video_local

    uri, milvus = resolve_tracking_uri(tracking_uri), resolve_milvus_uri(milvus_uri)
    if video:
        _require_champion(cfg, uri)
    try:
        if video:
            run_video_local(text, uri, pipeline_root, input_path=input_path, milvus_uri=milvus, runner=runner)
        else:
            run_local(text, uri, pipeline_root, input_path=input_path, milvus_uri=milvus, runner=runner)
    except RuntimeError as e:
        unchanged = "the video index is" if video else "registry aliases and the serving index are"
        raise MRLError(f"pipeline failed: {e} (the step's log above says why); {unchanged} unchanged") from None
    from mrl.cli.summary import print_training_summary, print_video_summary

    if video:
        print_video_summary(cfg, milvus, pipeline_root, typer.echo)
    else:
        print_training_summary(cfg, uri, milvus, pipeline_root, typer.echo)


def _require_champion(cfg, tracking_uri: str) -> None:
    """The video pipeline embeds with the champion and trains nothing: without one, say so before any step runs."""
    from mrl.registry import aliases

    name = cfg.registry.model_name
    if aliases(name, tracking_uri).get("champion") is None:
        raise MRLError(f"ingest.source: video runs the video pipeline, which embeds frames with the champion of "
                       f"{name}, and {tracking_uri} has none: run the training pipeline first (`mrl pipeline run` "
                       "with an image source), or set registry.model_name")


@app.command("compile")
@fails_cleanly
def pipeline_compile(params: ParamsOpt = None, out_dir: Annotated[Path | None, typer.Option(
        help="directory for training.yaml, video.yaml and drift.yaml (default: pipelines/, the checked-in files)")] = None):
    """Compile the training, video and drift pipelines to YAML, with params' cluster section (secrets, volume, GPUs)."""
    from pipelines import drift, training, video

    cluster = load_config(params).cluster
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for module in (training, video, drift):
        path = (out_dir / module.COMPILED.name) if out_dir else module.COMPILED
        typer.echo(f"wrote {module.compile_pipeline(path, cluster)}")


@app.command("drift")
@fails_cleanly
def pipeline_drift(
    current: Annotated[str, typer.Option(help="window path as the steps see it (query-log directory, .npy, ...)")],
    params: Annotated[Path, typer.Option("--params", "-p", help="params.yaml passed to every step")] = Path("params.yaml"),
    host: Annotated[str | None, typer.Option(help="KFP API URL: create a recurring run there (with --cron)")] = None,
    cron: Annotated[str, typer.Option(help="recurring-run schedule, six fields (seconds first)")] = "0 0 * * * *",
    reference: Annotated[str, typer.Option(help="drift reference (default: the served collection's)")] = "",
    tracking_uri: TrackingOpt = None,
    milvus_uri: MilvusOpt = None,
    pipeline_root: Annotated[Path, typer.Option(help="kfp.local outputs")] = Path("artifacts/kfp"),
    runner: RunnerOpt = "subprocess",
):
    """The drift-monitoring pipeline: once on kfp.local, or as a recurring run on a KFP host."""
    cfg = load_config(params)
    text = params.read_text()
    if host:
        from pipelines.run import schedule_drift

        job = schedule_drift(host, text, cron, current, cfg.registry.experiment, tracking_uri or "", milvus_uri or "")
        typer.echo(f"recurring run {job} on {host}: {cron}")
        return
    from mrl.retrieval.milvus_index import resolve_milvus_uri
    from mrl.tracking import resolve_tracking_uri
    from pipelines.local import latest_local_output
    from pipelines.run import run_drift_local

    try:
        drifted = run_drift_local(text, current, pipeline_root, resolve_tracking_uri(tracking_uri),
                                  resolve_milvus_uri(milvus_uri), reference, runner=runner)
    except RuntimeError as e:
        raise MRLError(f"drift pipeline failed: {e} (the step's log above says why)") from None
    typer.echo(f"{'DRIFT' if drifted else 'no drift'}; report: {latest_local_output(pipeline_root, 'drift-op', 'report')}")
