"""`mrl index`: the Milvus collections behind the serving aliases. Promote (embed, choose the funnel, build, verify,
swap the alias), retier (re-choose the funnel on the logged queries, rebuild from the stored vectors), roll back,
release a dead promotion's lock."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import MilvusOpt, ParamsOpt, SetOpt, TrackingOpt, VideosOpt, fails_cleanly, write_json
from mrl.config import load_config
from mrl.errors import MRLError

app = typer.Typer(no_args_is_help=True, help="The serving indexes (Milvus collections behind aliases): promote, "
                                              "retier, rollback, snapshot, unlock.")


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
    """Embed the catalogue with the champion, choose the funnel, build and verify a new Milvus collection, then swap
    the serving alias to it (--segments: the same for video segments). The registry's gate is `mrl model promote`."""
    if (data is None) == (segments is None):
        raise MRLError("promote: give exactly one of --data or --segments")
    cfg = load_config(params, set_ or [])
    if segments is not None:
        from mrl.video.index import promote_segments

        v = promote_segments(cfg, segments, milvus_uri, log=typer.echo)
        if v.dropped:
            typer.echo(f"dropped old collections: {', '.join(v.dropped)}")
        write_json(out, vars(v))
        return
    from mrl.promote import promote_index

    r = promote_index(cfg, data, tracking_uri, milvus_uri, version, log=typer.echo)
    if r.dropped:
        typer.echo(f"dropped old collections: {', '.join(r.dropped)}")
    write_json(out, r.to_dict())


@app.command()
@fails_cleanly
def retier(
    queries: Annotated[Path | None, typer.Option(help="the service's query log: a directory of queries-*.npy "
                                                 "(full-dim query embeddings); default artifacts/query_log")] = None,
    min_queries: Annotated[int | None, typer.Option(min=1, help="fewer logged queries than this: choose on held-out "
                                                    "rows of the collection instead; default 100")] = None,
    out: Annotated[Path | None, typer.Option(help="write the retier record (JSON)")] = None,
    tracking_uri: TrackingOpt = None,
    milvus_uri: MilvusOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Re-choose the served collection's funnel on the queries the service logged (the newest
    retrieval.max_queries), rebuild it from its stored vectors (no model runs) as <alias>_v<N>_t<n>, verify it and
    swap the alias; `mrl index rollback` goes back. Nothing is rebuilt when the served funnel still wins."""
    from mrl.retier import MIN_LOG_QUERIES, retier_index

    cfg = load_config(params, set_ or [])
    r = retier_index(cfg, milvus_uri, tracking_uri, queries, min_queries or MIN_LOG_QUERIES, log=typer.echo)
    for line in r.summary(cfg.retrieval.collection_prefix, cfg.retrieval.k):
        typer.echo(line)
    write_json(out, r.to_dict())


@app.command()
@fails_cleanly
def rollback(videos: VideosOpt = False, milvus_uri: MilvusOpt = None, params: ParamsOpt = None, set_: SetOpt = None):
    """Point the serving alias back at the collection the current one replaced (the registry's is `mrl model
    rollback`)."""
    from mrl.retrieval.lifecycle import rollback_index

    cfg = load_config(params, set_ or [])
    alias = cfg.video.collection_prefix if videos else cfg.retrieval.collection_prefix
    old, new = rollback_index(cfg, milvus_uri, alias)
    typer.echo(f"alias {alias}: {old} -> {new}")


@app.command()
@fails_cleanly
def snapshot(milvus_uri: MilvusOpt = None, params: ParamsOpt = None, set_: SetOpt = None):
    """Write the memory backend's snapshot of the served items collection (shortlist index, re-rank table, ids and
    labels, checksummed) to retrieval.snapshot_dir (default: beside a Milvus Lite data directory), for replicas to
    start from in seconds. Promotion writes one itself; this is for an index promoted without one."""
    from mrl.retrieval.lifecycle import snapshot_served

    cfg = load_config(params, set_ or [])
    started = time.perf_counter()
    folder = snapshot_served(cfg, milvus_uri, log=typer.echo)
    typer.echo(f"snapshot {folder} written in {time.perf_counter() - started:.1f}s")


@app.command()
@fails_cleanly
def unlock(videos: VideosOpt = False, milvus_uri: MilvusOpt = None, params: ParamsOpt = None, set_: SetOpt = None):
    """Release the promotion lock of a promotion that died (a killed process or pod). Only when no promotion of this
    alias is running: one that is would lose its exclusivity (its final alias swap still refuses a moved alias)."""
    from mrl.retrieval import milvus_index as mi
    from mrl.retrieval.lifecycle import unlock_alias

    cfg = load_config(params, set_ or [])
    alias = cfg.video.collection_prefix if videos else cfg.retrieval.collection_prefix
    client = mi.connect(milvus_uri)
    try:
        held = unlock_alias(client, alias)
    finally:
        client.close()
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(held.get("since", 0))))
    typer.echo(f"released the promotion lock of alias {alias}: held by {held.get('owner')} on {held.get('host', '?')} "
               f"(pid {held.get('pid', '?')}) since {since}")
