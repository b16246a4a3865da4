"""`mrl search` (one search, printed) and `mrl serve` (the HTTP service): both over mrl.search.Searcher."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import MilvusOpt, ParamsOpt, SetOpt, TrackingOpt, fails_cleanly, sleeping_openmp_waits
from mrl.config import load_config
from mrl.errors import MRLError


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
        sleeping_openmp_waits()
    if data is not None:
        return _search_text_dataset(cfg, text, data, model, dim, k)
    from mrl.search import Query, Searcher

    which = "videos" if videos or clip is not None else "items"
    if image is not None:
        try:
            query = Query(image=image.read_bytes(), label=str(image))
        except FileNotFoundError:
            raise MRLError(f"{image}: file not found") from None
    else:
        query = Query(id=item_id, clip=clip, text=text, label="--text" if text is not None else str(clip or ""))
    searcher = Searcher.open(cfg, milvus_uri, tracking_uri, load_model=item_id is None, log=typer.echo,
                             one_shot=True, only=which)
    try:
        hits = searcher.search(query, k, which)
    finally:
        searcher.close()
    what = item_id or (repr(text) if text is not None else str(image or clip))
    served = f"{hits.collection} (model v{hits.model_version}, funnel {hits.funnel})"
    header = f"{served}, moments matching {what}:" if which == "videos" else f"{served}, neighbours of {what}:"
    print_hits(hits, header, which, typer.echo)


def print_hits(hits, header: str, which: str, echo: Callable[[str], None]) -> None:
    """A search's hits (mrl.search.Hits) under `header`, one per line, and its stage timings."""
    echo(header)
    if which == "videos":
        for rank, h in enumerate(hits.results, 1):
            frame = f"frame {h['frame_score']:.4f}  " if h.get("frame_score") is not None else ""
            echo(f"  {rank:>3}. {h['video_id']:<24} {h['start_s']:7.1f}-{h['end_s']:<7.1f}s  best "
                 f"{h['best_s']:7.1f}s  {frame}segment {h['score']:.4f} ({h['segment_id']})")
    else:
        for rank, hit in enumerate(hits.results, 1):
            echo(f"  {rank:>3}. {hit['id']:<28} {hit['score']:.4f}  {hit['label']}"
                 + (f"  {hit['text'][:80]}" if "text" in hit else ""))
    echo("  timings: " + ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in hits.timings_ms.items()))


def _search_text_dataset(cfg, text: str, data: Path, model: Path | None, dim: int | None, k: int) -> None:
    from mrl.text.search import search_text

    hits, used = search_text(text, data, cfg.text, model, dim, k)
    typer.echo(f"{data.name}, {'adapter ' + model.name if model else 'base embedding'} at {used} dims, "
               f"documents nearest {text!r}:")
    for rank, hit in enumerate(hits, 1):
        typer.echo(f"  {rank:>3}. {hit['id']:<28} {hit['score']:.4f}  {hit['text'][:80]}")


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
    max_batch: Annotated[int, typer.Option(min=1, help="at most this many concurrent item searches answered by one "
                                           "index call (micro-batching; 1: each alone)")] = 64,
    workers: Annotated[int, typer.Option(min=1, help="server processes on the port, each replaced if it dies; more "
                                         "than 1 needs a Milvus server URL (milvus-lite server or Milvus)")] = 1,
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

    from mrl.service import create_app
    from mrl.service import workers as worker_processes

    cfg = load_config(params, set_ or [])
    worker_processes.check_shared_milvus(milvus_uri, workers)
    if 0 < cfg.retrieval.drop_grace_s <= reload_interval:
        typer.echo(f"warning: --reload-interval {reload_interval:g} s is not under retrieval.drop_grace_s "
                   f"{cfg.retrieval.drop_grace_s:g} s: a promotion may drop a collection this replica still serves",
                   err=True)
    app_kwargs = {"milvus_uri": milvus_uri, "tracking_uri": tracking_uri, "query_log_dir": str(query_log_dir),
                  "load_model": not no_model, "query_log_max_age_s": query_log_max_age,
                  "reload_interval_s": reload_interval, "videos_dir": None if videos_dir is None else str(videos_dir),
                  "max_batch": max_batch}
    if workers > 1:
        worker_processes.save_args(None if params is None else str(params), set_ or [], **app_kwargs)
        uvicorn.run("mrl.service.workers:app", factory=True, workers=workers, host=host, port=port,
                    access_log=access_log)
        return
    uvicorn.run(create_app(cfg, **app_kwargs), host=host, port=port, access_log=access_log)
