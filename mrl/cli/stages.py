"""The stage commands: ingest, validate, train, evaluate, embed, and segment for videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import ParamsOpt, SetOpt, TrackingOpt, fails_cleanly, sleeping_openmp_waits
from mrl.config import load_config
from mrl.errors import MRLError


@fails_cleanly
def ingest(
    output: Annotated[Path, typer.Option(help="artifact to write (.npz): a dataset, or video frames")],
    source: Annotated[str | None, typer.Option(help="fashion_mnist | image_folder | embeddings | video | text "
                                               "[params: ingest.source]")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="idx directory, image folder, Parquet table, folder "
                                                  "of videos, or a text table (JSONL, CSV, Parquet) "
                                                  "[params: ingest.input]")] = None,
    pairs: Annotated[Path | None, typer.Option(help="text: pairs file of query text -> document id "
                                               "[params: text.pairs]")] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Read raw data into a dataset artifact (ids, labels, split), videos into a frames artifact, or a text table into
    a text dataset (documents and queries embedded by the frozen sentence encoder, with their pairs)."""
    from typing import get_args

    from mrl.ingest import Source

    sources = (*get_args(Source), "video")
    if source and source not in sources:
        raise MRLError(f"--source: unknown source {source!r} (expected one of {', '.join(sources)})")
    overrides = (set_ or []) + ([f"ingest.source={source}"] if source else [])
    cfg = load_config(params, overrides)
    if cfg.ingest.source == "text":
        sleeping_openmp_waits()
    from mrl.ingest import ingest as run

    if cfg.ingest.source == "video":
        from mrl.video.frames import ingest_videos

        v = ingest_videos(input or cfg.ingest.input, output, cfg.video, cfg.ingest, log=typer.echo)
        typer.echo(f"wrote {v.path}: {v.frames:,} frames at {cfg.video.fps:g} fps from {v.videos} videos "
                   f"({v.hours:.2f} h) in {v.seconds:.1f}s ({v.frames_per_second:,.0f} frames/s)")
        if v.skipped:
            typer.echo(f"skipped {len(v.skipped)} files (video.on_bad_file=skip):\n  " + "\n  ".join(v.skipped))
        return
    if pairs is not None and cfg.ingest.source != "text":
        raise MRLError("--pairs goes with --source text")
    r = run(cfg.ingest.source, input or cfg.ingest.input, output, cfg.ingest, cfg.text, pairs, log=typer.echo)
    if r.kind == "text":
        t, e = r.details, r.details.embedding
        rate = f", {e.embedded:,} embedded in {e.seconds:.1f}s ({e.texts_per_second:,.0f} texts/s)" if e.embedded else ""
        typer.echo(f"wrote {t.path}: {t.documents:,} documents, {t.queries:,} queries ({t.train_queries:,} train, "
                   f"{t.test_queries:,} test), {t.pairs:,} pairs, {t.dim} dims; {e.unique:,} distinct texts, "
                   f"{e.cached:,} from the cache{rate}")
        return
    typer.echo(f"wrote {r.path}: {r.kind} {list(r.item_shape)}, {r.n_train} train + {r.n_test} test items, "
               f"{len(r.classes)} classes")
    if r.skipped:
        typer.echo(f"skipped {len(r.skipped)} files (ingest.on_bad_file=skip):\n  " + "\n  ".join(r.skipped))


@fails_cleanly
def validate(
    data: Annotated[Path | None, typer.Option(help="dataset artifact to validate")] = None,
    table: Annotated[Path | None, typer.Option(help="or: an embeddings table (Parquet) to validate")] = None,
    frames: Annotated[Path | None, typer.Option(help="or: video frames from `mrl ingest --source video`")] = None,
    segments: Annotated[Path | None, typer.Option(help="or: video segments from `mrl segment`")] = None,
    dim: Annotated[int | None, typer.Option(help="expected dim of --table [params: model.embedding_dim]")] = None,
    result_out: Annotated[Path | None, typer.Option(help="write the full Great Expectations result (JSON)")] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Great Expectations gates: exit 2 with the failed expectations named if any fails."""
    from mrl.validate import validate_dataset, validate_embeddings_table, validate_frames, validate_segments

    given = [name for name, value in (("--data", data), ("--table", table), ("--frames", frames),
                                      ("--segments", segments)) if value is not None]
    if len(given) != 1:
        raise MRLError(f"validate: give exactly one of --data, --table, --frames, --segments "
                       f"(got {', '.join(given) or 'none'})")
    cfg = load_config(params, set_ or [])
    if data is not None:
        report = validate_dataset(data, cfg.validation, result_out, cfg.model)
    elif frames is not None:
        report = validate_frames(frames, cfg, result_out)
    elif segments is not None:
        report = validate_segments(segments, result_out)
    else:
        report = validate_embeddings_table(table, cfg.validation, dim or cfg.model.embedding_dim, result_out,
                                           cfg.ingest.id_column, cfg.ingest.vector_column, cfg.ingest.label_column)
    typer.echo(f"validation passed: {report.evaluated} expectations" +
               (f", result in {report.result_path}" if report.result_path else ""))


@fails_cleanly
def train(
    data: Annotated[Path, typer.Option(help="dataset artifact from `mrl ingest`")],
    out: Annotated[Path, typer.Option(help="checkpoint to write (.pt), updated every epoch")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
    resume: Annotated[Path | None, typer.Option(help="checkpoint to resume from")] = None,
):
    """Train an encoder with MatryoshkaLoss (a text dataset: the text adapter, on its query-document pairs)."""
    from mrl.text.artifact import is_text_dataset
    from mrl.train import train_stage

    cfg = load_config(params, set_ or [])
    if is_text_dataset(data):
        sleeping_openmp_waits()
    r = train_stage(cfg, data, out, resume, log=typer.echo)
    typer.echo(f"wrote {r.path}: {r.epochs} epochs, final loss {r.final_loss:.4f}, {r.seconds:.0f}s "
               f"({r.items_per_second:,.0f} {r.unit}/s)")


@fails_cleanly
def evaluate(
    model: Annotated[Path, typer.Option(help="checkpoint from `mrl train`")],
    data: Annotated[Path, typer.Option(help="dataset artifact (train split = database, test split = queries)")],
    metrics_out: Annotated[Path | None, typer.Option(help="JSON of metrics keyed by dim")] = None,
    plot_out: Annotated[Path | None, typer.Option(help="PNG plot of each metric against dim")] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Measure every nested prefix: linear probe, own head, 1-NN, mAP@k and recall@k. A text dataset: held-out queries
    against every document, recall/nDCG/MRR@k of the adapter, the truncated base embedding and PCA at every dim."""
    from mrl.evaluate import evaluate_stage

    r = evaluate_stage(model, data, load_config(params, set_ or []), metrics_out, plot_out)
    typer.echo(f"{r.title}\n{r.table}" if r.title else r.table)
    for path in (r.json_path, r.plot_path):
        if path:
            typer.echo(f"wrote {path}")


@fails_cleanly
def embed(
    model: Annotated[Path, typer.Option(help="checkpoint from `mrl train`")],
    data: Annotated[Path, typer.Option(help="dataset artifact to embed")],
    out: Annotated[Path, typer.Option(help="Parquet table to write (id, label, split, embedding)")],
    batch_size: Annotated[int, typer.Option(min=1)] = 1024,
):
    """Write a model's full embeddings of a dataset as an embeddings table."""
    from mrl.evaluate import embed as run

    typer.echo(f"wrote {run(model, data, out, batch_size)}")


@fails_cleanly
def segment(
    frames: Annotated[Path, typer.Option(help="video frames from `mrl ingest --source video`")],
    out: Annotated[Path, typer.Option(help="segments artifact to write (.npz)")],
    version: Annotated[str | None, typer.Option(help="model version to embed with (default: the champion)")] = None,
    tracking_uri: TrackingOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Embed video frames with the champion and cut them into scenes on a small prefix (or fixed windows)."""
    from mrl.video.scenes import segment_videos

    cfg = load_config(params, set_ or [])
    r = segment_videos(cfg, frames, out, tracking_uri, version, log=typer.echo)
    typer.echo(f"wrote {r.path}: {r.segments:,} segments of {r.videos} videos ({r.frames:,} frames, model "
               f"v{r.model_version}, cuts on the {r.scene_dim}-dim prefix)")
