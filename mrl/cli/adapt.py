"""`mrl adapt`: Matryoshka prefixes for vectors you already have (a Milvus collection or a file), without re-encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import MilvusOpt, ParamsOpt, SetOpt, TrackingOpt, fails_cleanly, write_json
from mrl.config import load_config


@fails_cleanly
def adapt(
    collection: Annotated[str | None, typer.Option(help="a Milvus collection (or alias) to read the vectors from: "
                                                   "fields adapt.id_field and adapt.vector_field")] = None,
    vectors: Annotated[Path | None, typer.Option(help="or: a vectors file (.parquet or .npz with those columns, or an "
                                                 "(N, D) .npy whose ids are the row numbers)")] = None,
    source_uri: Annotated[str | None, typer.Option(help="the Milvus holding --collection (default: --milvus-uri)")]
    = None,
    model_name: Annotated[str, typer.Option(help="registry name of the adapter (default: <collection or file>-mrl)")]
    = "",
    alias: Annotated[str, typer.Option(help="alias the adapted collection is served behind (default: "
                                       "<collection or file>_mrl)")] = "",
    out: Annotated[Path | None, typer.Option(help="directory for the adapter, its metrics and plot, and the vectors "
                                             "(default: artifacts/adapt/<name>)")] = None,
    promote: Annotated[bool, typer.Option("--promote/--no-promote", help="also build, verify and swap in the adapted "
                                          "collection")] = True,
    summary: Annotated[Path | None, typer.Option(help="write what was done (JSON)")] = None,
    tracking_uri: TrackingOpt = None,
    milvus_uri: MilvusOpt = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Read the vectors, train an adapter whose prefixes keep their neighbours (no labels), evaluate every prefix
    against truncation and PCA of the same vectors, register it through the gate and promote an adapted collection;
    the service then passes query vectors through the adapter. Bad input changes nothing."""
    from mrl.adapt.run import adapt as run
    from mrl.adapt.run import default_names
    from mrl.adapt.source import read_source

    cfg = load_config(params, set_ or [])
    base = read_source(cfg.adapt, collection, vectors, source_uri or milvus_uri, log=typer.echo)
    r = run(cfg, base, out or Path("artifacts/adapt") / default_names(base)[1], tracking_uri, milvus_uri,
            model_name, alias, promote, log=typer.echo)
    typer.echo(r.decision.table())
    reg = r.registration
    typer.echo(f"{reg.model_name} v{reg.version} (run {reg.run_id}) is champion")
    if r.promotion is not None:
        p = r.promotion
        typer.echo(f"serving {p.collection} behind alias {r.alias} (funnel {p.funnel.funnel.name()}, verified "
                   f"recall@{cfg.retrieval.k} {p.verify_recall:.4f}): query vectors of {base.dim} dims go through "
                   "the adapter")
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items()))
    write_json(summary, {"source": base.source, "vectors": len(base.ids), "dim": base.dim, "dims": r.dims,
                         "paths": {k: str(v) for k, v in r.paths.items()}, "per_dim": r.evaluation.per_dim(),
                         "registration": vars(r.registration), "gate": r.decision.to_dict(),
                         "promotion": r.promotion.to_dict() if r.promotion else None, "seconds": r.seconds})
