"""Embedding drift: is a window of current embeddings still like the reference the index was built on?

The scores are Evidently's (`EmbeddingsDrift` with the configured method at each nesting prefix the
served funnel uses, and a chi-square test of class shares). The thresholds are ours: Evidently's
defaults are fixed numbers whose false-alarm rate depends on the data, so at promotion every threshold
is calibrated on same-distribution windows drawn from held-back reference rows (see `calibrate`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrl.config import Config, DriftConfig
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.progress import progress

EXIT_DRIFT = 3  # `mrl drift` exit code for a detected drift: distinct from 1 (crash) and 2 (bad input)
CLASS_TEST = "class_share"
FORMAT = "mrl-drift-reference/1"


@dataclass
class Reference:
    """What promotion saves for drift checks of one served collection."""

    embeddings: np.ndarray  # (rows, full_dim) float32: first `compare_rows` are compared, the rest calibrate
    compare_rows: int
    labels: np.ndarray  # class index per row, -1 where unknown
    class_names: list[str]
    centroids: np.ndarray | None  # (classes, full_dim) unit class means: predicted classes of unlabelled windows
    prefixes: list[int]
    method: str
    pca_components: int
    window_size: int  # the window size the thresholds were calibrated for
    thresholds: dict[str, float]  # "d<dim>", "class_share/labels", "class_share/predicted"
    meta: dict[str, Any] = field(default_factory=dict)  # model name/version/uri, collection, created

    @property
    def full_dim(self) -> int:
        return self.embeddings.shape[1]

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        return self.embeddings[: self.compare_rows], self.embeddings[self.compare_rows:]


@dataclass
class TestResult:
    name: str  # "d8", ..., "class_share"
    score: float  # the method's drift score; for class_share the chi-square p-value
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    drifted: bool
    tests: list[TestResult]
    method: str
    current_rows: int  # rows in the window as read
    compared_rows: int  # rows compared after sampling
    reference_rows: int
    class_source: str | None  # "labels", "predicted" or None (class shares not tested)
    recalibrated: bool  # thresholds re-derived for a window smaller than the calibrated size
    seconds: float
    reference_meta: dict[str, Any]
    checked_at: str = ""  # UTC, ISO 8601
    report_html: str = ""
    summary_json: str = ""
    snapshot_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- scores (shared by calibration and checks)

def unit_prefix(emb: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` dims, re-normalized: the geometry the funnel searches in."""
    prefix = emb[:, :dim].astype(np.float64)
    return prefix / np.maximum(np.linalg.norm(prefix, axis=1, keepdims=True), 1e-12)


def prefix_frame(emb: np.ndarray, dim: int) -> pd.DataFrame:
    return pd.DataFrame(unit_prefix(emb, dim), columns=[f"d{dim}_{j}" for j in range(dim)])


def drift_method(method: str, dim: int, pca_components: int, threshold: float):
    """One of Evidently's EmbeddingsDrift methods, with our threshold (bootstrap off: we calibrate)."""
    from evidently.metrics.embeddings import DistanceDriftMethod, MMDDriftMethod, ModelDriftMethod, RatioDriftMethod

    pca = min(pca_components, dim) or None
    if method == "mmd":
        return MMDDriftMethod(threshold=threshold, bootstrap=False, pca_components=pca)
    if method == "model":
        return ModelDriftMethod(threshold=threshold, bootstrap=False, pca_components=pca)
    if method == "distance":
        return DistanceDriftMethod(dist="euclidean", threshold=threshold, bootstrap=False, pca_components=pca)
    return RatioDriftMethod(threshold=threshold, pca_components=pca)


def embedding_score(method: str, dim: int, pca_components: int, current: np.ndarray, reference: np.ndarray) -> float:
    score, _, _ = drift_method(method, dim, pca_components, 0.0)(prefix_frame(current, dim), prefix_frame(reference, dim))
    return float(score)


class MMDScorer:
    """Evidently's MMD score (`MMDDriftMethod`, bootstrap off) of many windows against one reference, computed the
    same way at a fraction of the cost: the reference's PCA, its pairwise distances and the row samples that set the
    kernel bandwidth are computed once instead of once per window. Calibration scores hundreds of windows; the
    tests check that the scores equal Evidently's.

    Evidently's steps, per window: PCA fitted on the reference (random_state 0); bandwidth sigma^2 = the squared
    median of euclidean distances between up to 1,000 rows of each side (pandas `sample(random_state=0)`); RBF kernel
    exp(-d^2 / sigma^2) over both sides; the unbiased MMD^2 statistic, floored at 0.
    """

    SAMPLE = 1000  # rows of each side that set the bandwidth (Evidently's constant)

    def __init__(self, reference: np.ndarray, dim: int, pca_components: int):
        from sklearn.decomposition import PCA

        x = unit_prefix(reference, dim)
        n_comp = min(pca_components, dim)
        self.pca = PCA(n_components=n_comp, random_state=0) if n_comp else None
        self.dim = dim
        self.x = self.pca.fit_transform(x) if self.pca else x
        self.x_sample = self._sample_rows(len(self.x))
        self.xx = self._sq_distances(self.x, self.x)

    @classmethod
    def _sample_rows(cls, n: int) -> np.ndarray:
        return pd.RangeIndex(n).to_frame().sample(min(n, cls.SAMPLE), random_state=0).index.to_numpy()

    @staticmethod
    def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        from sklearn.metrics.pairwise import euclidean_distances

        return euclidean_distances(a, b, squared=True)

    def score(self, current: np.ndarray) -> float:
        y = unit_prefix(current, self.dim)
        y = self.pca.transform(y) if self.pca else y
        m, n = len(self.x), len(y)
        xy = self._sq_distances(self.x, y)
        y_sample = self._sample_rows(n)
        if len(self.x_sample) == m and len(y_sample) == n:  # both samples are every row: a permutation of xy
            sampled = np.sqrt(xy)
        else:
            sampled = np.sqrt(self._sq_distances(self.x[self.x_sample], y[y_sample]))
        gamma = 1.0 / np.median(sampled) ** 2
        sums = [self._kernel_sum(d, gamma) for d in (self.xx, self._sq_distances(y, y), xy)]
        mmd2u = (sums[0][0] - sums[0][1]) / (m * (m - 1.0)) + (sums[1][0] - sums[1][1]) / (n * (n - 1.0)) \
            - 2.0 / (m * n) * sums[2][0]
        return float(max(mmd2u, 0))

    @staticmethod
    def _kernel_sum(sq_distances: np.ndarray, gamma: float) -> tuple[float, float]:
        """The RBF kernel matrix's sum and trace, without keeping the matrix."""
        k = np.multiply(sq_distances, -gamma)
        np.exp(k, out=k)
        return float(k.sum()), float(np.trace(k))


def embedding_scorers(ref: Reference) -> dict[str, Callable[[np.ndarray], float]]:
    """Per test ("d<dim>"), a function scoring a window against `ref`'s compared rows as `score_window` does: the MMD
    method through `MMDScorer` (fast, same numbers), the others through Evidently."""
    compared = ref.embeddings[: ref.compare_rows]
    if ref.method == "mmd":
        return {f"d{d}": MMDScorer(compared, d, ref.pca_components).score for d in ref.prefixes}
    return {f"d{d}": partial(embedding_score, ref.method, d, ref.pca_components, reference=compared)
            for d in ref.prefixes}


def class_share_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's chi-square test of the current class shares against the reference's (`chi_stat_test`: expected
    counts are the reference's scaled to the current window), computed directly: calibration runs it hundreds of
    times, and Evidently's wrapper costs ~50 ms a call. The tests check both give the same p-value."""
    from scipy.stats import chisquare

    keys = np.union1d(reference, current)
    expected = (reference[:, None] == keys).sum(axis=0) * (len(current) / len(reference))
    observed = (current[:, None] == keys).sum(axis=0)
    with np.errstate(divide="ignore"):  # a class the reference lacks: p = 0, as in Evidently
        return float(chisquare(observed, expected)[1])


def predict_classes(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest class centroid (cosine, full dim): class shares for windows without labels, such as query logs."""
    return np.argmax(unit_prefix(emb, emb.shape[1]) @ centroids.T, axis=1)


def class_centroids(emb: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray | None:
    known = labels >= 0
    if len(np.unique(labels[known])) < 2:
        return None
    full = unit_prefix(emb, emb.shape[1])
    centroids = np.zeros((classes, emb.shape[1]))
    for c in np.unique(labels[known]):
        centroids[c] = full[labels == c].mean(axis=0)
    return unit_prefix(centroids, emb.shape[1])


def score_window(ref: Reference, current: np.ndarray, ref_cls: np.ndarray | None = None,
                 cur_cls: np.ndarray | None = None) -> dict[str, float]:
    """The scores a check's report computes, without the report: for calibration and the bench."""
    compared = ref.embeddings[: ref.compare_rows]
    scores = {f"d{d}": embedding_score(ref.method, d, ref.pca_components, current, compared) for d in ref.prefixes}
    if ref_cls is not None and cur_cls is not None:
        scores[CLASS_TEST] = class_share_pvalue(ref_cls, cur_cls)
    return scores


def verdicts(scores: dict[str, float], thresholds: dict[str, float], class_key: str | None) -> list[TestResult]:
    """Embedding scores alarm above their threshold; the class-share p-value alarms below its own."""
    tests = []
    for name, score in scores.items():
        if name == CLASS_TEST:
            tests.append(TestResult(name, score, thresholds[class_key], score < thresholds[class_key]))
        else:
            tests.append(TestResult(name, score, thresholds[name], score > thresholds[name]))
    return tests


# ---------------------------------------------------------------- calibration

def test_names(prefixes: list[int], class_share: bool) -> list[str]:
    return [f"d{d}" for d in prefixes] + ([CLASS_TEST] if class_share else [])


def calibrate(ref: Reference, window: int, draws: int, false_alarm_rate: float, class_share: bool, seed: int,
              log: Callable[[str], None] = print) -> dict[str, float]:
    """Thresholds from `draws` same-distribution windows (calibration pool rows vs the compared rows).

    Bonferroni over the tests of one check: each test alarms with probability false_alarm_rate / tests on
    windows like these, so a check of unchanged data alarms with at most false_alarm_rate. Windows are drawn
    with replacement: subsets of one finite pool vary less than fresh samples do, which would set the
    thresholds too low (duplicates make the embedding scores slightly larger: a conservative error).
    """
    compared, pool = ref.split()
    if len(pool) < window:
        raise MRLError(f"drift reference: {len(pool)} calibration rows cannot give windows of {window}")
    alpha = false_alarm_rate / len(test_names(ref.prefixes, class_share))
    rng = np.random.default_rng(seed)
    ref_labels, pool_labels = ref.labels[: ref.compare_rows], ref.labels[ref.compare_rows:]
    modes = {}
    if class_share and (ref_labels >= 0).all() and (pool_labels >= 0).all():
        modes["labels"] = (ref_labels, pool_labels)
    if class_share and ref.centroids is not None:
        modes["predicted"] = (predict_classes(compared, ref.centroids), predict_classes(pool, ref.centroids))
    scores: dict[str, list[float]] = {}
    scorers = embedding_scorers(ref)
    # One thread per prefix: the scores' work is numpy and BLAS, which release the GIL.
    with ThreadPoolExecutor(max(len(scorers), 1)) as workers:
        for _ in progress(range(draws), f"calibrating drift thresholds ({window}-row windows)", "window"):
            rows = rng.choice(len(pool), window, replace=True)
            futures = {name: workers.submit(score, pool[rows]) for name, score in scorers.items()}
            draw = {name: future.result() for name, future in futures.items()}
            draw |= {f"{CLASS_TEST}/{mode}": class_share_pvalue(ref_cls, pool_cls[rows])
                     for mode, (ref_cls, pool_cls) in modes.items()}
            for name, value in draw.items():
                scores.setdefault(name, []).append(value)
    thresholds = {}
    for name, values in scores.items():
        # Scores alarm above their threshold; p-values alarm below theirs.
        if name.startswith(CLASS_TEST):
            thresholds[name] = float(np.quantile(values, alpha))
        else:
            thresholds[name] = float(np.quantile(values, 1 - alpha))
    log("drift thresholds: " + ", ".join(f"{k} {v:.4g}" for k, v in thresholds.items()))
    return thresholds


def build_reference(embeddings: np.ndarray, labels: np.ndarray, class_names: list[str], prefixes: list[int],
                    cfg: DriftConfig, meta: dict[str, Any], log: Callable[[str], None] = print) -> Reference:
    """Sample the reference and calibration rows from the indexed catalogue and calibrate the thresholds."""
    n = len(embeddings)
    compare = min(cfg.reference_size, n // 2)
    pool = min(cfg.calibration_pool, n - compare)
    window = min(cfg.window_size, pool // 2)  # at most half the pool, so calibration windows differ
    if window < cfg.min_window:
        raise MRLError(f"drift reference: {n} catalogue rows are too few for windows of drift.min_window "
                       f"{cfg.min_window} rows")
    take = np.random.default_rng(cfg.seed).permutation(n)[: compare + pool]
    emb, lab = embeddings[take].astype(np.float32), labels[take].astype(np.int64)
    ref = Reference(emb, compare, lab, list(class_names), class_centroids(emb, lab, len(class_names)), list(prefixes),
                    cfg.method, min(cfg.pca_components, compare), window, {}, dict(meta))  # PCA needs the rows
    ref.thresholds = calibrate(ref, ref.window_size, cfg.calibration_draws, cfg.false_alarm_rate, cfg.class_share,
                               cfg.seed, log)
    ref.meta.update(created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), false_alarm_rate=cfg.false_alarm_rate,
                    calibration_draws=cfg.calibration_draws, class_share=cfg.class_share)
    return ref


def save_reference(ref: Reference, path: str | Path) -> Path:
    header = {k: v for k, v in asdict(ref).items() if k not in ("embeddings", "labels", "centroids")}
    arrays = {"embeddings": ref.embeddings, "labels": ref.labels}
    if ref.centroids is not None:
        arrays["centroids"] = ref.centroids
    path = Path(path)
    atomic_write(path, lambda f: np.savez(f, header=json.dumps({"format": FORMAT, **header}), **arrays))
    return path


def load_reference(path: str | Path) -> Reference:
    path = Path(path)
    if not path.is_file():
        raise MRLError(f"{path}: drift reference not found (it is written when an index is promoted: mrl promote)")
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            arrays = {k: z[k] for k in ("embeddings", "labels")}
            centroids = z["centroids"] if "centroids" in z.files else None
    except (OSError, ValueError, KeyError) as e:
        raise MRLError(f"{path}: not a drift reference ({e})") from None
    if header.pop("format", None) != FORMAT:
        raise MRLError(f"{path}: not a drift reference (format is not {FORMAT})")
    return Reference(centroids=centroids, **arrays, **header)


# ---------------------------------------------------------------- reading a window

def read_window(path: str | Path, split: str | None = None,
                embed: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings (and class names, where the source has labels) of a current window.

    `path` is the service's query-log directory (queries-*.npy), a .npy array, a dataset artifact (.npz; images
    are embedded with `embed`) or a Parquet embeddings table.
    """
    from mrl.data.artifact import load_dataset

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("queries-*.npy"))
        if not files:
            raise MRLError(f"{path}: the window is empty (no queries-*.npy files)")
        return np.concatenate([_read_npy(f) for f in files]), None
    if not path.exists():
        raise MRLError(f"{path}: file not found")
    if path.suffix == ".npy":
        return _read_npy(path), None
    if path.suffix == ".parquet":
        from mrl.config import IngestConfig
        from mrl.data.readers import read_embeddings_table

        ds = read_embeddings_table(path, IngestConfig(source="embeddings"))
    else:  # a dataset artifact: .npz, or no suffix as pipeline artifacts have
        from mrl.text.artifact import is_text_dataset, load_text_dataset

        if is_text_dataset(path):  # the window is the dataset's queries (what the service logs), not its documents
            return _text_queries(load_text_dataset(path), path, split, embed), None
        ds = load_dataset(path)
    if split is not None:
        if split not in set(ds.split.tolist()):
            raise MRLError(f"{path}: no items in split {split!r}")
        ds = ds.subset(split)
    if ds.kind == "embeddings":
        x = ds.x.astype(np.float32)
    elif embed is None:
        raise MRLError(f"{path}: {ds.kind} items need a model to embed them")
    else:
        x = embed(ds.x)
    # Class names, not indices: the window's class list need not be the reference's.
    labels = np.asarray(ds.classes)[ds.labels].astype(str) if (ds.labels >= 0).all() else None
    return x, labels


def _text_queries(td, path: Path, split: str | None, embed: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """A text dataset's queries (of `split`) through the adapter: the base embeddings are the adapter's inputs."""
    rows = np.arange(len(td.query_x)) if split is None else np.flatnonzero(td.query_split == split)
    if not len(rows):
        raise MRLError(f"{path}: no queries in split {split!r}")
    if embed is None:
        raise MRLError(f"{path}: text queries need the adapter to embed them")
    return embed(td.query_x[rows])


def _read_npy(path: Path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise MRLError(f"{path}: not a .npy array ({e})") from None
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise MRLError(f"{path}: expected a 2-D numeric array of embeddings, got shape {x.shape} {x.dtype}")
    return x.astype(np.float32)


# ---------------------------------------------------------------- the check

def _check_window(current: np.ndarray, ref: Reference, source: str, min_window: int) -> None:
    if current.ndim != 2 or len(current) == 0:
        raise MRLError(f"{source}: the window is empty")
    if current.shape[1] != ref.full_dim:
        raise MRLError(f"{source}: embeddings have {current.shape[1]} dims, the reference has {ref.full_dim}")
    bad = ~np.isfinite(current).all(axis=1)
    if bad.any():
        raise MRLError(f"{source}: {int(bad.sum())} rows contain NaN or infinite values (first: row {int(np.argmax(bad))})")
    if len(current) < min_window:
        raise MRLError(f"{source}: {len(current)} rows, fewer than drift.min_window {min_window}")


def _report(ref: Reference, compared: np.ndarray, current: np.ndarray, ref_cls, cur_cls, thresholds: dict[str, float],
            class_key: str | None):
    """The Evidently report whose metric values are the verdict's scores."""
    import evidently.legacy.metrics.data_drift.embeddings_drift as legacy_embeddings
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from sklearn.decomposition import PCA

    from mrl.drift_dashboard import threshold_metrics

    # The report draws a density plot of each side projected to 2-D, with t-SNE over up to 2,500 rows per side.
    # t-SNE was most of a check's time (measured: 148 of 196 s for a 1000-row window on a busy 2-core machine,
    # ~15 s idle); a PCA projection of 500 rows per side shows where the two sides differ in milliseconds. The
    # drift scores themselves use every compared row and are not affected.
    legacy_embeddings.SAMPLE_CONSTANT = 500
    legacy_embeddings.TSNE = PCA

    def frame(emb, cls):
        df = pd.concat([prefix_frame(emb, d) for d in ref.prefixes], axis=1)
        if cls is not None:
            df[CLASS_TEST] = [ref.class_names[c] for c in cls]
        return df

    definition = DataDefinition(
        embeddings={f"d{d}": [f"d{d}_{j}" for j in range(d)] for d in ref.prefixes},
        categorical_columns=[CLASS_TEST] if class_key else [],
    )
    metrics = [EmbeddingsDrift(embeddings_name=f"d{d}",
                               drift_method=drift_method(ref.method, d, ref.pca_components, thresholds[f"d{d}"]))
               for d in ref.prefixes]
    if class_key:
        metrics.append(ValueDrift(column=CLASS_TEST, method="chisquare", threshold=thresholds[class_key]))
    # The thresholds ride along as metric values after the scores, for the dashboard to plot beside them.
    used = {f"d{d}": thresholds[f"d{d}"] for d in ref.prefixes} | ({CLASS_TEST: thresholds[class_key]} if class_key else {})
    return Report([*metrics, *threshold_metrics(used)]).run(
        current_data=Dataset.from_pandas(frame(current, cur_cls), data_definition=definition),
        reference_data=Dataset.from_pandas(frame(compared, ref_cls), data_definition=definition),
    )


def check_drift(ref: Reference, current: np.ndarray, labels: np.ndarray | None, cfg: DriftConfig,
                source: str = "current window", log: Callable[[str], None] = print):
    """Compare a window (embeddings, optional class names) with the reference. Returns (DriftResult, snapshot)."""
    started = time.perf_counter()
    _check_window(current, ref, source, cfg.min_window)
    rows_read = len(current)
    rng = np.random.default_rng(cfg.seed + 1)
    if len(current) > ref.window_size:
        keep = np.sort(rng.choice(len(current), ref.window_size, replace=False))
        current, labels = current[keep], None if labels is None else labels[keep]
    thresholds, recalibrated = ref.thresholds, len(current) != ref.window_size
    class_share = bool(ref.meta.get("class_share", True)) and cfg.class_share
    if recalibrated:
        log(f"{source}: {len(current)} rows, fewer than the calibrated {ref.window_size}: recalibrating")
        thresholds = calibrate(ref, len(current), int(ref.meta.get("calibration_draws", cfg.calibration_draws)),
                               float(ref.meta.get("false_alarm_rate", cfg.false_alarm_rate)), class_share, cfg.seed, log)

    compared = ref.embeddings[: ref.compare_rows]
    class_key, ref_cls, cur_cls = None, None, None
    known = {name: i for i, name in enumerate(ref.class_names)}
    # Labels are compared where every one names a reference class; otherwise (a new class, a query log)
    # the shares of nearest-centroid predictions are.
    if (class_share and labels is not None and all(name in known for name in labels)
            and f"{CLASS_TEST}/labels" in thresholds):
        cur_cls = np.array([known[name] for name in labels])
        class_key, ref_cls = f"{CLASS_TEST}/labels", ref.labels[: ref.compare_rows]
    elif class_share and ref.centroids is not None and f"{CLASS_TEST}/predicted" in thresholds:
        class_key = f"{CLASS_TEST}/predicted"
        ref_cls, cur_cls = predict_classes(compared, ref.centroids), predict_classes(current, ref.centroids)

    snapshot = _report(ref, compared, current, ref_cls, cur_cls, thresholds, class_key)
    names = [f"d{d}" for d in ref.prefixes] + ([CLASS_TEST] if class_key else [])
    values = [float(m["value"]) for m in snapshot.dict()["metrics"][: len(names)]]  # the scores; thresholds follow
    tests = verdicts(dict(zip(names, values)), thresholds, class_key)
    result = DriftResult(
        drifted=any(t.drifted for t in tests), tests=tests, method=ref.method, current_rows=rows_read,
        compared_rows=len(current), reference_rows=len(compared),
        class_source=class_key.split("/")[1] if class_key else None, recalibrated=recalibrated,
        seconds=round(time.perf_counter() - started, 3), reference_meta=ref.meta,
        checked_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return result, snapshot


def write_outputs(result: DriftResult, snapshot, out_dir: str | Path, workspace: str | Path | None,
                  project: str) -> DriftResult:
    """report.html and summary.json in out_dir; the snapshot added to the local Evidently workspace, whose
    project gets its drift dashboard (see mrl.drift_dashboard)."""
    from mrl.drift_dashboard import add_to_workspace, annotate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    snapshot = annotate(snapshot, result)  # header with verdict, model, windows and thresholds; tags
    html = out / "report.html"
    snapshot.save_html(str(html))
    result.report_html = str(html)
    if workspace:
        result.snapshot_id = add_to_workspace(snapshot, result, str(workspace), project)
    summary = out / "summary.json"
    result.summary_json = str(summary)
    atomic_write(summary, lambda f: f.write(json.dumps(result.as_dict(), indent=2, default=str).encode()))
    return result


def format_result(result: DriftResult) -> str:
    lines = [f"{'test':<12} {'score':>10} {'threshold':>10}  verdict"]
    for t in result.tests:
        rule = "<" if t.name == CLASS_TEST else ">"
        lines.append(f"{t.name:<12} {t.score:>10.4g} {rule}{t.threshold:>9.4g}  {'DRIFT' if t.drifted else 'ok'}")
    verdict = "DRIFT" if result.drifted else "no drift"
    lines.append(f"{verdict}: {result.compared_rows} of {result.current_rows} current rows vs {result.reference_rows} "
                 f"reference rows, method {result.method}, {result.seconds:.1f} s")
    return "\n".join(lines)


def reference_path(cfg: Config, collection: str) -> Path:
    return Path(cfg.drift.reference_dir) / f"{collection}.npz"


def served_reference(cfg: Config, milvus_uri: str | None, tracking_uri: str | None = None,
                     log: Callable[[str], None] = print) -> Path:
    """The reference of the collection the serving alias points at now (after a rollback: the older one's).

    Promotion writes it to drift.reference_dir and logs it to the model version's MLflow run; where the local
    file is missing (a check running on another machine or pod), it is downloaded from that run.
    """
    from mrl.retrieval import milvus_index as mi

    client = mi.connect(milvus_uri)
    try:
        served = mi.alias_target(client, cfg.retrieval.collection_prefix)
        if served is None:
            raise MRLError(f"Milvus alias {cfg.retrieval.collection_prefix} does not exist: promote an index first, "
                           "or pass --reference")
        info = mi.CollectionInfo.read(client, served)
    finally:
        client.close()
    path = reference_path(cfg, served)
    if path.exists():
        return path
    from mrl.tracking import client as mlflow_client

    registry = mlflow_client(tracking_uri)
    run_id = registry.get_model_version(info.model_name, info.model_version).run_id
    log(f"{path} not here: downloading it from MLflow run {run_id}")
    try:
        registry.download_artifacts(run_id, f"drift/{path.name}", str(path.parent))
    except Exception as e:  # MlflowException or OSError, depending on the artifact store
        raise MRLError(f"{path}: drift reference not found here, nor in MLflow run {run_id} "
                       f"({type(e).__name__})") from None
    return path


def monitor(cfg: Config, current: str | Path, out_dir: str | Path, reference: str | Path | None = None,
            split: str | None = None, workspace: str | Path | None = None, milvus_uri: str | None = None,
            tracking_uri: str | None = None, log: Callable[[str], None] = print) -> DriftResult:
    """`mrl drift`: read the window, compare it with the served collection's reference, write the report,
    summary and workspace snapshot. Bad input raises MRLError before anything is written."""
    ref_path = Path(reference) if reference else served_reference(cfg, milvus_uri, tracking_uri, log)
    ref = load_reference(ref_path)

    def embed(x: np.ndarray) -> np.ndarray:
        from mrl.champion import embed_with

        log(f"embedding {len(x)} items with {ref.meta.get('model_uri')}")
        return embed_with(ref.meta["model_uri"], x, cfg.evaluate.batch_size, "embedding window", tracking_uri)

    emb, labels = read_window(current, split, embed if ref.meta.get("model_uri") else None)
    result, snapshot = check_drift(ref, emb, labels, cfg.drift, str(current), log)
    result.reference_meta = {**ref.meta, "path": str(ref_path)}
    return write_outputs(result, snapshot, out_dir, workspace, cfg.drift.project)


def monitor_into(params_yaml: str, current: str, report_path: str, summary_path: str, split: str = "",
                 reference: str = "", tracking_uri: str = "", milvus_uri: str = "") -> tuple[bool, dict[str, Any]]:
    """`monitor` for a pipeline step: report and summary to the step's output files; (drifted, metadata)."""
    import shutil
    import tempfile

    from mrl.config import parse_params

    cfg = parse_params(params_yaml, "params_yaml")
    with tempfile.TemporaryDirectory() as out:
        result = monitor(cfg, current, out, reference or None, split or None, cfg.drift.workspace, milvus_uri or None,
                         tracking_uri or None)
        shutil.copyfile(result.report_html, report_path)
        shutil.copyfile(result.summary_json, summary_path)
    print(format_result(result))
    return result.drifted, {t.name: t.score for t in result.tests} | {"drifted": result.drifted}
