"""Validation stage: Great Expectations suites over the dataset artifact, text datasets, embedding tables and the video
frames and segments artifacts.

Fails closed: any failed expectation raises a one-line MRLError naming the failed expectations, after the
full GX result has been written as JSON. Each suite runs on small derived frames (one row per item, per
split/class, per split), so 70k items validate in about a second.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from mrl.config import Config, ModelConfig, ValidationConfig, VideoConfig
from mrl.data.artifact import SPLITS, atomic_write, load_dataset
from mrl.errors import MRLError
from mrl.models.backbones import model_input_shape
from mrl.text.artifact import is_text_dataset, load_text_dataset


@dataclass
class ValidationReport:
    success: bool
    failures: list[str]  # "expectation(column): detail", one per failed expectation
    evaluated: int  # expectations evaluated
    result_path: Path | None


def _gx():
    # GX reads these at import; keep it offline and quiet in pipelines.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)

    return gx, gxe


def _run_suites(name: str, frames: dict[str, tuple[pd.DataFrame, list]]) -> tuple[list[dict], list[str], int]:
    """Validate each frame with its expectations in one ephemeral GX context."""
    gx, _ = _gx()

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name)
    results, failures, evaluated = [], [], 0
    for frame_name, (frame, expectations) in frames.items():
        batch = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(f"{name}.{frame_name}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}.{frame_name}", data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
        results.append(result.to_json_dict())
        for r in result.results:
            evaluated += 1
            if not r.success:
                config = r.expectation_config
                column = config.kwargs.get("column", "")
                unexpected = r.result.get("unexpected_count")
                sample = r.result.get("partial_unexpected_list") or []
                detail = (f"{unexpected} unexpected" + (f", e.g. {sample[:3]}" if sample else "")
                          if unexpected is not None else f"observed {r.result.get('observed_value')}")
                failures.append(f"{frame_name}.{config.type}({column}): {detail}")
    return results, failures, evaluated


def _finish(name: str, source: str, results, failures, evaluated, out_path) -> ValidationReport:
    result_path = None
    if out_path:
        result_path = Path(out_path)
        text = json.dumps({"name": name, "source": source, "success": not failures, "failures": failures,
                           "results": results}, indent=2, default=str)
        atomic_write(result_path, lambda f: f.write(text.encode()))
    report = ValidationReport(not failures, failures, evaluated, result_path)
    if failures:
        raise MRLError(f"{source}: {len(failures)} of {evaluated} expectations failed: " + "; ".join(failures))
    return report


def _vector_rows(x: np.ndarray) -> dict[str, np.ndarray]:
    flat = x.reshape(len(x), -1).astype(np.float64)
    finite = np.isfinite(flat).all(axis=1)
    norm = np.linalg.norm(np.where(np.isfinite(flat), flat, 0.0), axis=1)
    return {"finite": finite, "norm": norm}


def _shape_expectations(gxe, input_shape: tuple[int, int, int] | None) -> list:
    """Channels and size of every image against what the model takes (model.backbone / model.image_size)."""
    if input_shape is None:
        return []
    return [gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[value])
            for name, value in zip(("channels", "height", "width"), input_shape)]


def _shape_columns(x: np.ndarray) -> dict[str, np.ndarray]:
    n = len(x)
    _, c, h, w = x.shape if x.ndim == 4 else (n, 0, 0, 0)
    return {"channels": np.full(n, c), "height": np.full(n, h), "width": np.full(n, w)}


def dataset_expectations(cfg: ValidationConfig, kind: str, n_classes: int, labeled: bool,
                         input_shape: tuple[int, int, int] | None = None) -> dict[str, list]:
    _, gxe = _gx()
    items = [
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
    ]
    if labeled:
        items.append(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(n_classes))))
    if kind == "images":
        items += [gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255),
                  gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255)]
        items += _shape_expectations(gxe, input_shape)
    else:
        items.append(gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=cfg.vector_min_norm,
                                                       max_value=cfg.vector_max_norm))
    frames = {
        "items": items,
        "splits": [gxe.ExpectColumnValuesToBeBetween(column="train_items", min_value=cfg.min_train_items),
                   gxe.ExpectColumnValuesToBeBetween(column="test_items", min_value=cfg.min_test_items)],
    }
    if labeled:
        frames["class_shares"] = [gxe.ExpectColumnValuesToBeBetween(
            column="share", min_value=cfg.min_class_share, max_value=cfg.max_class_share)]
    return frames


def validate_dataset(data_path: str | Path, cfg: ValidationConfig, out_path: str | Path | None = None,
                     model: ModelConfig | None = None) -> ValidationReport:
    """Run the dataset suite on an artifact from `mrl ingest` (the text suite on a text dataset); raise MRLError if any
    expectation fails. With `model`, every image's channels and size are checked against what a pretrained
    model.backbone takes."""
    if is_text_dataset(data_path):
        return validate_text_dataset(data_path, cfg, out_path)
    ds = load_dataset(data_path, check=False)
    classes = [str(c) for c in ds.classes]
    if cfg.expected_classes is not None and classes != list(cfg.expected_classes):
        raise MRLError(f"{data_path}: classes {classes} differ from validation.expected_classes "
                       f"{list(cfg.expected_classes)}")
    labeled = bool((ds.labels >= 0).any())
    items = {"id": ds.ids.astype(str), "split": ds.split.astype(str), "label": ds.labels.astype(np.int64)}
    if ds.kind == "images":
        flat = ds.x.reshape(len(ds.x), -1)
        items |= {"finite": np.ones(len(flat), dtype=bool), "pixel_min": flat.min(axis=1), "pixel_max": flat.max(axis=1)}
        items |= _shape_columns(ds.x)
    else:
        items |= _vector_rows(ds.x)
    items_frame = pd.DataFrame(items)
    splits_frame = pd.DataFrame([{f"{s}_items": int((items_frame.split == s).sum()) for s in SPLITS}])
    frames = {"items": items_frame, "splits": splits_frame}
    if labeled:
        shares = (items_frame[items_frame.split.isin(SPLITS)].groupby("split").label
                  .value_counts(normalize=True).rename("share").reset_index())
        # A class missing from a split is a share of 0, not an absent row.
        full = pd.MultiIndex.from_product([sorted(set(shares.split)), range(len(classes))], names=["split", "label"])
        frames["class_shares"] = shares.set_index(["split", "label"]).reindex(full, fill_value=0.0).reset_index()
    input_shape = model_input_shape(model.backbone, model.image_size) if model else None
    expectations = dataset_expectations(cfg, ds.kind, len(classes), labeled, input_shape)
    results, failures, evaluated = _run_suites(
        "dataset", {name: (frames[name], expectations[name]) for name in expectations})
    return _finish("dataset", str(data_path), results, failures, evaluated, out_path)


def text_expectations(cfg: ValidationConfig, n_classes: int) -> dict[str, list]:
    """Documents and queries: unique, non-null ids, non-empty texts, finite base embeddings within the norm bounds
    (queries also a train/test split and at least one pair each). Pairs: both ends resolve (a query and a document of
    the dataset). Counts: at least validation.min_train_items pairs of train queries (what the adapter trains on) and
    validation.min_test_items held-out queries (what evaluation and index promotion measure with)."""
    _, gxe = _gx()

    def texts() -> list:
        return [gxe.ExpectColumnValuesToNotBeNull(column="id"), gxe.ExpectColumnValuesToBeUnique(column="id"),
                gxe.ExpectColumnValuesToBeBetween(column="text_chars", min_value=1),  # non-blank characters
                gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
                gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=cfg.vector_min_norm,
                                                  max_value=cfg.vector_max_norm)]

    return {
        "documents": [*texts(), gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[-1, *range(n_classes)])],
        "queries": [*texts(), gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test"]),
                    gxe.ExpectColumnValuesToBeBetween(column="pairs", min_value=1)],
        "pairs": [gxe.ExpectColumnValuesToBeInSet(column="query_found", value_set=[True]),
                  gxe.ExpectColumnValuesToBeInSet(column="document_found", value_set=[True])],
        "counts": [gxe.ExpectColumnValuesToBeBetween(column="train_pairs", min_value=cfg.min_train_items),
                   gxe.ExpectColumnValuesToBeBetween(column="test_queries", min_value=cfg.min_test_items)],
    }


def validate_text_dataset(data_path: str | Path, cfg: ValidationConfig,
                          out_path: str | Path | None = None) -> ValidationReport:
    """Run the text suite on a text dataset from `mrl ingest --source text`."""
    td = load_text_dataset(data_path, check=False)
    docs, n_docs, n_queries = td.documents, len(td.documents.ids), len(td.query_ids)
    lengths = {"document vectors": len(docs.x), "document texts": len(td.doc_texts), "document labels": len(docs.labels),
               "query vectors": len(td.query_x), "query texts": len(td.query_texts), "query splits": len(td.query_split)}
    expected = {name: n_docs if name.startswith("document") else n_queries for name in lengths}
    if lengths != expected or len(td.pair_query) != len(td.pair_doc):
        raise MRLError(f"{data_path}: {n_docs} document ids and {n_queries} query ids, but arrays of lengths {lengths} "
                       f"and {len(td.pair_query)} / {len(td.pair_doc)} pair ends")

    def text_rows(ids: np.ndarray, texts: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"id": ids.astype(str), "text_chars": np.array([len(t.strip()) for t in texts.astype(str).tolist()],
                                                              dtype=np.int64)} | _vector_rows(x)

    query_found = (td.pair_query >= 0) & (td.pair_query < n_queries)
    document_found = (td.pair_doc >= 0) & (td.pair_doc < n_docs)
    pairs_per_query = np.bincount(td.pair_query[query_found], minlength=n_queries)
    split = td.query_split.astype(str)
    frames = {
        "documents": pd.DataFrame(text_rows(docs.ids, td.doc_texts, docs.x) | {"label": docs.labels.astype(np.int64)}),
        "queries": pd.DataFrame(text_rows(td.query_ids, td.query_texts, td.query_x)
                                | {"split": split, "pairs": pairs_per_query}),
        "pairs": pd.DataFrame({"query_found": query_found, "document_found": document_found}),
        "counts": pd.DataFrame([{"train_pairs": int((split[td.pair_query[query_found]] == "train").sum()),
                                 "test_queries": int((split == "test").sum())}]),
    }
    expectations = text_expectations(cfg, len(docs.classes))
    results, failures, evaluated = _run_suites("text", {name: (frames[name], expectations[name]) for name in frames})
    return _finish("text", str(data_path), results, failures, evaluated, out_path)


def validate_embeddings_table(table_path: str | Path, cfg: ValidationConfig, embedding_dim: int,
                              out_path: str | Path | None = None, id_column: str = "id",
                              vector_column: str = "embedding", label_column: str | None = "label") -> ValidationReport:
    """Run the embeddings suite on a Parquet table (e.g. from `mrl embed`): dimension, finite values,
    norms within bounds, unique ids, and labels in the declared set when `expected_classes` is set."""
    _, gxe = _gx()
    try:
        table = pd.read_parquet(table_path)
    except FileNotFoundError:
        raise MRLError(f"{table_path}: file not found") from None
    except Exception as e:  # pyarrow raises several types for a foreign file
        raise MRLError(f"{table_path}: not a readable Parquet file ({type(e).__name__})") from None
    for column in (id_column, vector_column):
        if column not in table.columns:
            raise MRLError(f"{table_path}: missing column {column!r} (columns: {list(table.columns)})")
    vectors = table[vector_column].tolist()
    dims = np.array([len(v) if v is not None else 0 for v in vectors])
    rows = [np.asarray(v, dtype=np.float64) if d == embedding_dim else np.full(embedding_dim, np.nan)
            for v, d in zip(vectors, dims)]
    frame = pd.DataFrame({"id": table[id_column].astype(str), "dim": dims} | _vector_rows(np.stack(rows)))
    frame.loc[dims != embedding_dim, ["finite", "norm"]] = [True, 1.0]  # a wrong dim is reported once, as dim
    expectations = [
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="dim", value_set=[embedding_dim]),
        gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=cfg.vector_min_norm, max_value=cfg.vector_max_norm),
    ]
    if label_column and label_column in table.columns and cfg.expected_classes is not None:
        frame["label"] = table[label_column].astype(str)
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(cfg.expected_classes)))
    results, failures, evaluated = _run_suites("embeddings", {"rows": (frame, expectations)})
    return _finish("embeddings", str(table_path), results, failures, evaluated, out_path)


# --- video artifacts ---------------------------------------------------------------------------------------------

TIME_SLACK_S = 1e-3  # timestamps come from a stream's time base: allow a millisecond of rounding
MIN_FPS_SHARE = 0.5  # a video sampled at under half of video.fps has lost half its sampling grid
NORM_TOLERANCE = 1e-3  # segment embeddings are stored normalized (float32)


def frames_expectations(fps: float, input_shape: tuple[int, int, int] | None = None) -> dict[str, list]:
    """Per frame: times strictly increase within a video, pixels in 0..255. Per video: at least one frame, stored
    contiguously, the first within one sampling step of 0, the last inside the video, and the observed rate
    frames / (duration + 1/fps) within [MIN_FPS_SHARE, 1] x fps. Sampling keeps at most one frame per 1/fps step of
    [0, duration], so at most duration * fps + 1 frames: the rate cannot exceed fps (a denser artifact sampled
    something else), and an unbroken sampling of even a 0.4 s video stays above fps / 2 (frames / duration would
    not: 5 frames of a 2.1 s video at 2 fps are 1.19 x fps). Below fps / 2, gaps in the stream, lost frames or a
    source slower than half the sampling rate."""
    _, gxe = _gx()
    return {
        "frames": [
            gxe.ExpectColumnValuesToBeBetween(column="t", min_value=0),
            # dt: seconds since the previous frame of the same video (null for a video's first frame, not checked)
            gxe.ExpectColumnValuesToBeBetween(column="dt", min_value=0, strict_min=True),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_min", min_value=0, max_value=255),
            gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255),
            *_shape_expectations(gxe, input_shape),
        ],
        "videos": [
            gxe.ExpectColumnValuesToBeUnique(column="video"),
            gxe.ExpectColumnValuesToBeBetween(column="frames", min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="runs", value_set=[1]),  # segments address frames as row ranges
            gxe.ExpectColumnValuesToBeBetween(column="duration", min_value=0, strict_min=True),
            gxe.ExpectColumnValuesToBeBetween(column="first_t", max_value=1 / fps + TIME_SLACK_S),
            gxe.ExpectColumnValuesToBeBetween(column="overrun_s", max_value=TIME_SLACK_S),  # last frame - duration
            gxe.ExpectColumnValuesToBeBetween(column="observed_fps", min_value=MIN_FPS_SHARE * fps,
                                              max_value=fps * (1 + 1e-6)),
        ],
    }


def validate_frames(path: str | Path, cfg: Config | VideoConfig, out_path: str | Path | None = None) -> ValidationReport:
    """Run the frames suite on an artifact from `mrl ingest --source video` (rates against video.fps; with the whole
    Config, frame channels and size against a pretrained model.backbone's input)."""
    # the video modules: a DVC dep of the video stages only, not of every validation
    from mrl.video.frames import load_frames

    fps = (cfg.video if isinstance(cfg, Config) else cfg).fps
    input_shape = model_input_shape(cfg.model.backbone, cfg.model.image_size) if isinstance(cfg, Config) else None
    f = load_frames(path)  # structural faults (mismatched lengths, undeclared videos) fail here, naming the file
    video_ids = f.video_ids.astype(str)
    same_video = np.r_[False, video_ids[1:] == video_ids[:-1]]
    dt = np.where(same_video, np.r_[np.nan, np.diff(f.times)], np.nan)
    flat = f.pixels.reshape(len(f.pixels), -1)
    frames = pd.DataFrame({"video_id": video_ids, "t": f.times, "dt": dt,
                           "pixel_min": flat.min(axis=1).astype(np.int64), "pixel_max": flat.max(axis=1).astype(np.int64),
                           **_shape_columns(f.pixels)})
    # Per video, grouped (not a scan per video: an archive has thousands of videos and millions of frames). A video
    # without frames gets frames 0 and nulls elsewhere (not checked), so it is reported once, as frames.
    by_video = frames.assign(run_start=~same_video).groupby("video_id", sort=False)
    videos = pd.DataFrame({"video": f.videos.astype(str), "duration": f.durations.astype(np.float64)}).join(
        by_video.agg(frames=("t", "size"), runs=("run_start", "sum"), first_t=("t", "min"), last_t=("t", "max")),
        on="video")
    videos["frames"] = videos.frames.fillna(0).astype(np.int64)
    videos["overrun_s"] = videos.last_t - videos.duration
    videos["observed_fps"] = (videos.frames / (videos.duration + 1 / fps)).where(
        (videos.frames > 0) & (videos.duration > 0))
    expectations = frames_expectations(fps, input_shape)
    results, failures, evaluated = _run_suites(
        "frames", {"frames": (frames, expectations["frames"]), "videos": (videos, expectations["videos"])})
    return _finish("frames", str(path), results, failures, evaluated, out_path)


def segments_expectations(fps: float, videos: list[str]) -> dict[str, list]:
    """Per segment: unique ids of declared videos, 0 <= start < end <= the video's duration, a normalized, finite
    embedding and a non-empty frame range. Per video: at least one segment, the first starting within one sampling
    step of 0 (where its first frame is)."""
    _, gxe = _gx()
    return {
        "segments": [
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToBeInSet(column="video_id", value_set=videos),
            gxe.ExpectColumnValuesToBeBetween(column="start_s", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="length_s", min_value=0, strict_min=True),  # end_s - start_s
            gxe.ExpectColumnValuesToBeBetween(column="overrun_s", max_value=1e-6),  # end_s - the video's duration
            gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column="norm", min_value=1 - NORM_TOLERANCE, max_value=1 + NORM_TOLERANCE),
            gxe.ExpectColumnValuesToBeBetween(column="frames", min_value=1),  # rows of its frame range
        ],
        "videos": [
            gxe.ExpectColumnValuesToBeBetween(column="segments", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="first_start_s", min_value=0, max_value=1 / fps + TIME_SLACK_S),
        ],
    }


def validate_segments(path: str | Path, out_path: str | Path | None = None) -> ValidationReport:
    """Run the segments suite on an artifact from `mrl segment` (its sampling rate is in the artifact)."""
    # the video modules: a DVC dep of the video stages only, not of every validation
    from mrl.video.scenes import load_segments

    s = load_segments(path)
    if "fps" not in s.meta:
        raise MRLError(f"{path}: segments meta has no fps (the frames' sampling rate; written by `mrl segment`)")
    lengths = {name: len(getattr(s, name)) for name in ("video_ids", "start_s", "end_s", "embeddings", "frame_ranges")}
    if set(lengths.values()) != {len(s.ids)}:
        raise MRLError(f"{path}: {len(s.ids)} segment ids, but per-segment arrays of lengths {lengths}")
    video_ids, videos = s.video_ids.astype(str), s.videos.astype(str)
    duration = dict(zip(videos, s.durations.astype(np.float64)))
    ranges = s.frame_ranges.reshape(-1, 2)
    inside = (ranges[:, 0] >= 0) & (ranges[:, 1] <= len(s.frame_times))
    segments = pd.DataFrame({"id": s.ids.astype(str), "video_id": video_ids, "start_s": s.start_s,
                             "length_s": s.end_s - s.start_s,
                             "overrun_s": s.end_s - np.array([duration.get(v, np.nan) for v in video_ids]),
                             "frames": np.where(inside, ranges[:, 1] - ranges[:, 0], 0)}
                            | _vector_rows(s.embeddings))
    per_video = pd.DataFrame({"video": videos}).join(
        segments.groupby("video_id").agg(segments=("id", "size"), first_start_s=("start_s", "min")), on="video")
    per_video["segments"] = per_video.segments.fillna(0).astype(np.int64)
    expectations = segments_expectations(float(s.meta["fps"]), list(videos))
    results, failures, evaluated = _run_suites(
        "segments", {"segments": (segments, expectations["segments"]), "videos": (per_video, expectations["videos"])})
    return _finish("segments", str(path), results, failures, evaluated, out_path)
