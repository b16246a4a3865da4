"""`mrl` command line: one command per stage, each a thin call into the library."""

from __future__ import annotations

import base64
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from mrl.config import load_config
from mrl.errors import MRLError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Matryoshka Representation Learning: ingest, train, evaluate and embed.")

ParamsOpt = Annotated[Path | None, typer.Option("--params", "-p", help="params.yaml (default: embedded defaults)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a param: section.key=value")]


def _sleeping_openmp_waits() -> None:
    """Text embedding and adapter training: OpenMP threads sleep instead of busy-waiting. With busy-waiting, one of
    2 cores taken by another process made each adapter step ~16x slower and embedding ~1.7x slower (measured); on an
    idle machine sleeping costs almost nothing. libgomp reads this when torch loads: call before importing torch."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def fails_cleanly(command):
    """Turn MRLError into a one-line message on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MRLError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
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
        _sleeping_openmp_waits()
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


@app.command()
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


@app.command()
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

    cfg = load_config(params, set_ or [])
    if is_text_dataset(data):
        _sleeping_openmp_waits()
        from mrl.text.train import train_text_adapter

        if resume is not None:
            raise MRLError("--resume: the text adapter trains in minutes and does not resume; train it again")
        r = train_text_adapter(cfg, data, out, log=typer.echo)
        typer.echo(f"wrote {r.path}: {r.epochs} epochs, final loss {r.final_loss:.4f}, {r.seconds:.0f}s "
                   f"({r.items_per_second:,.0f} pairs/s)")
        return
    from mrl.train import train as run

    r = run(cfg, data, out, resume=resume, log=typer.echo)
    typer.echo(f"wrote {r.path}: {r.epochs} epochs, final loss {r.final_loss:.4f}, {r.seconds:.0f}s "
               f"({r.items_per_second:,.0f} items/s)")


@app.command()
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
    from mrl.evaluate import evaluate as run
    from mrl.evaluate import format_table
    from mrl.text.artifact import is_text_dataset

    cfg = load_config(params, set_ or [])
    if is_text_dataset(data):
        from mrl.text.evaluate import evaluate_text, format_text_table

        t = evaluate_text(model, data, cfg.text.eval_k, cfg.evaluate.max_queries, metrics_out, plot_out,
                          num_threads=cfg.train.num_threads)
        typer.echo(f"{t.queries:,} held-out queries against {t.documents:,} documents:\n{format_text_table(t)}")
        for path in (t.json_path, t.plot_path):
            if path:
                typer.echo(f"wrote {path}")
        return
    r = run(model, data, cfg.evaluate, metrics_out, plot_out)
    typer.echo(format_table(r.per_dim))
    for path in (r.json_path, r.plot_path):
        if path:
            typer.echo(f"wrote {path}")


@app.command()
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


TrackingOpt = Annotated[str | None, typer.Option(help="MLflow URI [env MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]")]


def _write_json(path: Path | None, payload: dict) -> None:
    if path:
        from mrl.data.artifact import atomic_write

        atomic_write(path, lambda f: f.write((json.dumps(payload, indent=2) + "\n").encode()))


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
        _write_json(out, {"registration": vars(registration), "gate": decision.to_dict()})
        return
    registration = register_run(model, metrics, plot, cfg, tracking_uri)
    typer.echo(f"registered {cfg.model_name} v{registration.version} (run {registration.run_id}) as challenger")
    _write_json(out, {"registration": vars(registration)})


@app.command("promote-model")
@fails_cleanly
def promote_model(
    version: Annotated[str | None, typer.Option(help="version to gate (default: the challenger)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the gate decision as JSON")] = None,
    tracking_uri: TrackingOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Registry promotion (MLflow aliases; index promotion is `promote`): make the challenger champion if it holds
    up at every nesting dim; exit 2 naming the dims if not."""
    from mrl.registry import promote_if_better

    cfg = load_config(params, set_ or []).registry
    decision = promote_if_better(cfg.model_name, cfg, version, tracking_uri)
    typer.echo(decision.table())
    typer.echo(f"{cfg.model_name} v{decision.version} is champion")
    _write_json(out, decision.to_dict())


@app.command("rollback-model")
@fails_cleanly
def rollback_model(tracking_uri: TrackingOpt = None, params: ParamsOpt = None, set_: SetOpt = None):
    """Move `champion` back to the version it replaced."""
    from mrl.registry import rollback_model as run

    cfg = load_config(params, set_ or []).registry
    old, new = run(cfg.model_name, tracking_uri)
    typer.echo(f"{cfg.model_name}: champion moved from v{old} back to v{new}")


@app.command()
@fails_cleanly
def models(
    compare: Annotated[bool, typer.Option("--compare", help="champion vs challenger per dim: a table and a plot")] = False,
    metric: Annotated[str | None, typer.Option(help="metric to compare (default: what the gate compares: "
                                               "registry.primary_metric, nDCG@k for a text adapter)")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG that --compare writes (default: "
                                              "artifacts/registry/<model>_v<champion>_vs_v<challenger>.png)")] = None,
    tracking_uri: TrackingOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Show the registry aliases (champion, challenger) with each version's lineage (data and params digests, git
    commit); --compare: their metric at every nesting dim."""
    from mrl.registry import aliases, lineage_line, version_lineage

    cfg = load_config(params, set_ or []).registry
    if not compare and (metric or plot):
        raise MRLError("--metric and --plot go with --compare")
    if not compare:
        for alias, version in aliases(cfg.model_name, tracking_uri).items():
            lineage = f"  ({lineage_line(version_lineage(cfg.model_name, version, tracking_uri))})" if version else ""
            typer.echo(f"{cfg.model_name}@{alias}: {'v' + version if version else '(none)'}{lineage}")
        return
    from mrl.compare import compare_versions, write_comparison_plot

    comparison = compare_versions(cfg.model_name, metric, tracking_uri, cfg.primary_metric)
    typer.echo(f"{cfg.model_name} {comparison.metric}: champion v{comparison.champion} vs challenger "
               f"v{comparison.challenger} (delta = challenger - champion)")
    typer.echo(comparison.table())
    path = plot or Path("artifacts/registry") / f"{cfg.model_name}_v{comparison.champion}_vs_v{comparison.challenger}.png"
    typer.echo(f"plot: {write_comparison_plot(comparison, path)}")


MilvusOpt = Annotated[str | None, typer.Option(help="Milvus URI or Milvus Lite file [env MILVUS_URI, else ./milvus.db]")]


@app.command()
@fails_cleanly
def promote(
    data: Annotated[Path | None, typer.Option(help="dataset artifact: the catalogue to index (test split = held-out "
                                              "queries)")] = None,
    segments: Annotated[Path | None, typer.Option(help="or: video segments from `mrl segment`, indexed behind "
                                                  "the video.collection_prefix alias")] = None,
    version: Annotated[str | None, typer.Option(help="model version to index (default: the champion)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the promotion record (JSON)")] = None,
    tracking_uri: TrackingOpt = None,
    milvus_uri: MilvusOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Index promotion (Milvus; registry promotion is promote-model): embed the catalogue with the champion,
    choose the funnel, build and verify a new Milvus collection, then swap the serving alias to it (--segments: the
    same for video segments)."""
    if (data is None) == (segments is None):
        raise MRLError("promote: give exactly one of --data or --segments")
    cfg = load_config(params, set_ or [])
    if segments is not None:
        from mrl.video.index import promote_segments

        v = promote_segments(cfg, segments, milvus_uri, log=typer.echo)
        if v.dropped:
            typer.echo(f"dropped old collections: {', '.join(v.dropped)}")
        _write_json(out, vars(v))
        return
    from mrl.promote import promote_index

    r = promote_index(cfg, data, tracking_uri, milvus_uri, version, log=typer.echo)
    if r.dropped:
        typer.echo(f"dropped old collections: {', '.join(r.dropped)}")
    _write_json(out, r.to_dict())


@app.command()
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


@app.command("rollback-index")
@fails_cleanly
def rollback_index(
    videos: Annotated[bool, typer.Option("--videos", help="the video segments alias (video.collection_prefix)")] = False,
    milvus_uri: MilvusOpt = None, params: ParamsOpt = None, set_: SetOpt = None,
):
    """Index rollback (Milvus; registry rollback is rollback-model): point the serving alias back at the
    collection the current one replaced."""
    from mrl.promote import rollback_index as run

    cfg = load_config(params, set_ or [])
    alias = cfg.video.collection_prefix if videos else cfg.retrieval.collection_prefix
    old, new = run(cfg, milvus_uri, alias)
    typer.echo(f"alias {alias}: {old} -> {new}")


@app.command("unlock-index")
@fails_cleanly
def unlock_index(
    videos: Annotated[bool, typer.Option("--videos", help="the video segments alias (video.collection_prefix)")] = False,
    milvus_uri: MilvusOpt = None, params: ParamsOpt = None, set_: SetOpt = None,
):
    """Release the promotion lock of a promotion that died (a killed process or pod). Only when no promotion of this
    alias is running: one that is would lose its exclusivity (its final alias swap still refuses a moved alias)."""
    from mrl.retrieval import milvus_index as mi

    cfg = load_config(params, set_ or [])
    alias = cfg.video.collection_prefix if videos else cfg.retrieval.collection_prefix
    client = mi.connect(milvus_uri)
    try:
        held = mi.lock_holder(client, alias)
        if held is None:
            raise MRLError(f"Milvus alias {alias}: no promotion lock is held")
        client.drop_collection(mi.lock_collection(alias))
    finally:
        client.close()
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(held.get("since", 0))))
    typer.echo(f"released the promotion lock of alias {alias}: held by {held.get('owner')} on {held.get('host', '?')} "
               f"(pid {held.get('pid', '?')}) since {since}")


@app.command()
@fails_cleanly
def search(
    item_id: Annotated[str | None, typer.Option("--id", help="search with this item's (or segment's) stored "
                                                "embedding")] = None,
    image: Annotated[Path | None, typer.Option(help="search with an image, embedded by the served model")] = None,
    clip: Annotated[Path | None, typer.Option(help="search the videos with a short clip (pooled like a segment)")] = None,
    videos: Annotated[bool, typer.Option("--videos", help="search the video segments index (implied by --clip)")]
    = False,
    text: Annotated[str | None, typer.Option(help="search with this query text: the served index of a text adapter, "
                                             "or with --data a text dataset's documents, exactly")] = None,
    data: Annotated[Path | None, typer.Option(help="--text: search this text dataset (from `mrl ingest --source "
                                              "text`) in process instead of the served index")] = None,
    model: Annotated[Path | None, typer.Option(help="--text: the adapter from `mrl train` (default: the base "
                                               "embedding)")] = None,
    dim: Annotated[int | None, typer.Option(min=1, help="--text: compare this many leading dims (default: all)")] = None,
    k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    tracking_uri: TrackingOpt = None,
    milvus_uri: MilvusOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Funnel search of the served index by an item id or an image (prints ids, scores, labels and stage timings);
    with --videos or --clip, coarse-to-fine search of the videos (video, span, best frame time). One query asks
    Milvus directly (a quantized shortlist, or --set retrieval.serve_backend=memory, loads it in memory).
    With --text: funnel search of the served index of a text adapter (the query embedded by its base encoder, then the
    adapter); with --text and --data, exact search of a text dataset's documents on a --dim prefix of the adapter
    (--model)."""
    given = [name for name, value in (("--id", item_id), ("--image", image), ("--clip", clip), ("--text", text))
             if value is not None]
    if len(given) != 1:
        raise MRLError(f"search: give exactly one of --id, --image, --clip, --text (got {', '.join(given) or 'none'})")
    if text is None and (data or model or dim):
        raise MRLError("--data, --model and --dim go with --text")
    if data is None and (model or dim):
        raise MRLError("--model and --dim go with --data (exact search of a text dataset); without --data, --text "
                       "searches the served index with its registered model")
    if text is not None and videos:
        raise MRLError("--text searches the items index (a text adapter's documents), not --videos")
    cfg = load_config(params, set_ or [])
    if text is not None:
        _sleeping_openmp_waits()
    if data is not None:
        from mrl.text.search import search_text

        hits, used = search_text(text, data, cfg.text, model, dim, k)
        typer.echo(f"{data.name}, {'adapter ' + model.name if model else 'base embedding'} at {used} dims, "
                   f"documents nearest {text!r}:")
        for rank, hit in enumerate(hits, 1):
            typer.echo(f"  {rank:>3}. {hit['id']:<28} {hit['score']:.4f}  {hit['text'][:80]}")
        return
    videos = videos or clip is not None
    if videos:
        from mrl.video.search import open_video_index

        index = open_video_index(cfg, milvus_uri, log=typer.echo, one_shot=True)
    else:
        from mrl.retrieval.serving import open_served_index

        index = open_served_index(cfg.retrieval, milvus_uri, log=typer.echo, one_shot=True)
    if item_id is not None:
        query = index.vector_of(item_id)
    else:
        query = _embed_query(cfg, index.info.model_version, tracking_uri, image, clip, text)
    what = item_id or (repr(text) if text is not None else str(image or clip))
    if videos:
        hits, timings = index.search(query, k)
        typer.echo(f"{index.name} (model v{index.info.model_version}, funnel {index.info.funnel.name()}), "
                   f"moments matching {what}:")
        for rank, h in enumerate(hits, 1):
            frame = f"frame {h['frame_score']:.4f}  " if h.get("frame_score") is not None else ""
            typer.echo(f"  {rank:>3}. {h['video_id']:<24} {h['start_s']:7.1f}-{h['end_s']:<7.1f}s  best "
                       f"{h['best_s']:7.1f}s  {frame}segment {h['score']:.4f} ({h['segment_id']})")
    else:
        rows, timings = index.search(query[None, :], k)
        typer.echo(f"{index.name} (model v{index.info.model_version}, funnel {index.info.funnel.name()}), "
                   f"neighbours of {what}:")
        from mrl.text.search import DocumentTexts

        for rank, hit in enumerate(DocumentTexts(index.client, index.name).add_to(rows[0]), 1):
            typer.echo(f"  {rank:>3}. {hit['id']:<28} {hit['score']:.4f}  {hit['label']}"
                       + (f"  {hit['text'][:80]}" if "text" in hit else ""))
    typer.echo("  timings: " + ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in timings.items()))


def _embed_query(cfg, model_version: str, tracking_uri: str | None, image: Path | None, clip: Path | None,
                 text: str | None = None):
    """An image, clip or query text embedded by the model version that built the served index."""
    import torch

    from mrl.champion import load_registered_model, resolve_champion
    from mrl.tracking import client as mlflow_client

    champion = resolve_champion(cfg, tracking_uri, model_version)
    if (text is not None) != (champion.kind == "text"):
        given, other = ("--text", "--image or --clip") if text is not None else ("--image/--clip", "--text")
        raise MRLError(f"{given}: the served index was built by {cfg.registry.model_name} v{model_version}, which "
                       f"embeds {champion.kind}; search it with {other} or --id")
    mlflow_client(tracking_uri)  # the registry that models:/ refers to
    model = load_registered_model(champion.model_uri)
    if text is not None:
        from mrl.text.search import check_query_text, served_text_encoder

        try:
            check_query_text(text)
        except ValueError as e:
            raise MRLError(f"--{e}") from None
        return served_text_encoder(cfg, tracking_uri, champion.run_id, model)([text])[0]
    if clip is not None:
        from mrl.video.search import embed_clip

        return embed_clip(clip, model, cfg, champion.item_shape)
    from mrl.serve import decode_image

    try:
        pixels = decode_image(base64.b64encode(image.read_bytes()).decode(), champion.item_shape)
    except FileNotFoundError:
        raise MRLError(f"{image}: file not found") from None
    except ValueError:
        raise MRLError(f"{image}: not a readable image") from None
    with torch.no_grad():
        return model(torch.from_numpy(pixels[None])).numpy()[0]


@app.command()
@fails_cleanly
def serve(
    host: Annotated[str, typer.Option(help="bind address (default: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    query_log_dir: Annotated[Path, typer.Option(help="rolling window of query embeddings")] = Path("artifacts/query_log"),
    query_log_max_age: Annotated[float, typer.Option(min=0.1, help="seconds before buffered queries are written, "
                                                     "however few")] = 60.0,
    no_model: Annotated[bool, typer.Option("--no-model", help="skip loading the model (image search off)")] = False,
    access_log: Annotated[bool, typer.Option(help="log every request (costs ~5% of throughput; /metrics counts "
                                             "them anyway)")] = False,
    reload_interval: Annotated[float, typer.Option(min=0, help="seconds between checks of the Milvus aliases: a "
                                                   "promotion or rollback is picked up within this (0: only on "
                                                   "POST /admin/reload); keep it well under retrieval.drop_grace_s")]
    = 30.0,
    videos_dir: Annotated[Path | None, typer.Option(help="folder holding the indexed videos, for the page's player "
                                                    "(GET /videos/{id}); default: the folder recorded at ingest")]
    = None,
    tracking_uri: TrackingOpt = None,
    milvus_uri: MilvusOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """HTTP funnel search over the promoted index: POST /search, /healthz, /readyz, /metrics, /admin/reload, and the
    indexed videos at /videos/{id} for the search page's player."""
    # One OpenMP thread per search (before FAISS loads, so every thread inherits it): a request is one query, and
    # OpenMP pools spinning under concurrent requests cost far more than they give.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from mrl.serve import create_app

    cfg = load_config(params, set_ or [])
    if 0 < cfg.retrieval.drop_grace_s <= reload_interval:
        typer.echo(f"warning: --reload-interval {reload_interval:g} s is not under retrieval.drop_grace_s "
                   f"{cfg.retrieval.drop_grace_s:g} s: a promotion may drop a collection this replica still serves",
                   err=True)
    app = create_app(cfg, milvus_uri, tracking_uri, query_log_dir, load_model=not no_model,
                     query_log_max_age_s=query_log_max_age, reload_interval_s=reload_interval, videos_dir=videos_dir)
    uvicorn.run(app, host=host, port=port, access_log=access_log)


pipeline_app = typer.Typer(no_args_is_help=True, help="Run or compile the Kubeflow pipelines (training, video, drift).")
app.add_typer(pipeline_app, name="pipeline")
RunnerOpt = Annotated[Literal["subprocess", "docker"], typer.Option(
    help="kfp.local runner: each step a subprocess here, or a container of the project image (`make image`) through a "
         "Docker API (Docker, or podman's: `make podman-socket`)")]


@pipeline_app.command("run")
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
        from pipelines.run import submit

        run_id = submit(host, text, tracking_uri or "", cfg.registry.experiment, input_path=input_path,
                        milvus_uri=milvus_uri or "", video=video)
        typer.echo(f"submitted {'video' if video else 'training'} pipeline run {run_id} to {host}")
        return
    from mrl.retrieval.milvus_index import resolve_milvus_uri
    from mrl.tracking import resolve_tracking_uri
    from pipelines.run import run_local, run_video_local

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
    from pipelines.run import print_training_summary, print_video_summary

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


@pipeline_app.command("compile")
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


@pipeline_app.command("drift")
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
    from pipelines.run import latest_local_output, run_drift_local

    try:
        drifted = run_drift_local(text, current, pipeline_root, resolve_tracking_uri(tracking_uri),
                                  resolve_milvus_uri(milvus_uri), reference, runner=runner)
    except RuntimeError as e:
        raise MRLError(f"drift pipeline failed: {e} (the step's log above says why)") from None
    typer.echo(f"{'DRIFT' if drifted else 'no drift'}; report: {latest_local_output(pipeline_root, 'drift-op', 'report')}")


@app.command()
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
        from pipelines.run import launchers

        try:
            typer.echo(on_drift(cfg, result.as_dict(), tracking_uri or "", milvus_uri or "", launchers(),
                                log=typer.echo))
        except MRLError as e:
            typer.echo(f"error: drift found, but the retrain action failed: {e}", err=True)
            raise typer.Exit(4) from None
    raise typer.Exit(EXIT_DRIFT)


@app.command()
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
    from pipelines.run import launchers

    cfg = load_config(params, set_ or [])
    if set_ and resolve_how(cfg, how) == "dvc":
        raise MRLError("--set: dvc repro reads params.yaml, not these overrides; edit params.yaml instead")
    typer.echo(run(cfg, how, input or "", tracking_uri or "", milvus_uri or "", launchers=launchers(),
                   log=typer.echo))


@app.command("show-params")
@fails_cleanly
def show_params(params: ParamsOpt = None, set_: SetOpt = None):
    """Validate params and print the resolved configuration."""
    typer.echo(json.dumps(load_config(params, set_ or []).model_dump(mode="json"), indent=2))


def main() -> None:  # pragma: no cover
    app(prog_name="mrl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
