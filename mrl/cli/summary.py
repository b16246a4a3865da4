"""What `mrl pipeline run` prints at the end: the per-dim table, the registry, the index with an example search, the
drift check, and where to go next."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from mrl.cli.search import print_hits
from pipelines.local import latest_local_output


def print_video_summary(cfg, milvus_uri: str, pipeline_root: Path, echo: Callable[[str], None] = print) -> None:
    """The promotion, an example search (a segment's own embedding as the query) and how to search."""
    from mrl.search import Query, Searcher

    record = json.loads(latest_local_output(pipeline_root, "promote-segments-op", "promotion").read_text())
    echo(f"\nvideo index: alias {cfg.video.collection_prefix} -> {record['collection']} (previous: "
         f"{record['previous'] or 'none'}): {record['segments']:,} segments, {record['frames']:,} frames, "
         f"funnel {record['funnel']}, verified recall@{cfg.retrieval.k} {record['verify_recall']:.4f}")
    # One search: ask Milvus, load nothing in memory.
    searcher = Searcher.open(cfg, milvus_uri, load_model=False, one_shot=True, only="videos")
    segment = next(iter(searcher.videos.spans))
    hits = searcher.search(Query(id=segment), 5, "videos")
    searcher.close()
    print_hits(hits, f"example search, the moments nearest segment {segment}:", "videos", echo)
    echo(f"\nsearch the videos: mrl search --videos --image FRAME.png --milvus-uri {milvus_uri}   "
         "(or --clip CLIP.mp4)")
    echo(f"search service:    mrl serve --milvus-uri {milvus_uri}   (search page http://127.0.0.1:8000/, API /docs)")
    echo(f"pipeline outputs:  {pipeline_root}/")


def print_training_summary(cfg, tracking_uri: str, milvus_uri: str, pipeline_root: Path,
                           echo: Callable[[str], None] = print) -> None:
    """What a user looks at after a run: the per-dim table, aliases, an example search, where to go next."""
    from mrl.evaluate import format_table
    from mrl.registry import aliases
    from mrl.search import Query, Searcher

    per_dim = latest_local_output(pipeline_root, "evaluate-op", "per_dim")
    if per_dim:
        rows = {int(m): row for m, row in json.loads(per_dim.read_text()).items()}
        echo("\nper-dim evaluation (test queries vs train database):\n" + format_table(rows))
    echo("\nregistry:")
    for alias, v in aliases(cfg.registry.model_name, tracking_uri).items():
        echo(f"  {cfg.registry.model_name}@{alias}: {'v' + v if v else '(none)'}")
    # One search: ask Milvus, load nothing in memory.
    searcher = Searcher.open(cfg, milvus_uri, load_model=False, one_shot=True, only="items")
    first_id = searcher.items.sample_id()
    hits = searcher.search(Query(id=first_id), 5)
    searcher.close()
    echo(f"\nindex: alias {cfg.retrieval.collection_prefix} -> {hits.collection}, funnel {hits.funnel}")
    print_hits(hits, f"example search, the 5 nearest items to {first_id}:", "items", echo)
    print_drift_check(cfg, pipeline_root, echo)
    if tracking_uri.startswith("sqlite:"):
        echo(f"\nMLflow UI:      mlflow ui --backend-store-uri {tracking_uri}   "
             "(http://127.0.0.1:5000/#/experiments?workflowType=machine_learning)")
    echo(f"search service: mrl serve --milvus-uri {milvus_uri}   (search page http://127.0.0.1:8000/, API /docs)")
    echo(f"pipeline outputs: {pipeline_root}/")


def print_drift_check(cfg, pipeline_root: Path, echo: Callable[[str], None] = print) -> None:
    """The training pipeline's drift check of the held-out split, and its report copied where a person finds it."""
    from mrl.drift import DriftResult, format_result

    summary, report = (latest_local_output(pipeline_root, "dataset-drift-op", name) for name in ("summary", "report"))
    if not (summary and report):
        return
    d = json.loads(summary.read_text())
    result = DriftResult.from_dict(d)
    html = Path(cfg.drift.reference_dir).parent / "last-check.html"  # the artifact has no .html suffix
    shutil.copyfile(report, html)
    echo(f"\ndrift check: held-out split vs the reference of {result.reference_meta.get('collection')}\n"
         + format_result(result))
    echo(f"drift report:   {html}\ndrift history:  evidently ui --workspace {cfg.drift.workspace} --port 8001")
