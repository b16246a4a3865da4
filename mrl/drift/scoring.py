"""Scores, shared by calibration and checks: Evidently's embedding drift methods at each nesting prefix, the
class-share chi-square test, and the verdict of scores against thresholds."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd

from mrl.drift.reference import Reference
from mrl.drift.results import CLASS_TEST, TestResult


def unit_prefix(emb: np.ndarray, dim: int) -> np.ndarray:
    """The first `dim` dims, re-normalized: the geometry the funnel searches in."""
    prefix = emb[:, :dim].astype(np.float64)
    return prefix / np.maximum(np.linalg.norm(prefix, axis=1, keepdims=True), 1e-12)


def prefix_frame(emb: np.ndarray, dim: int) -> pd.DataFrame:
    return pd.DataFrame(unit_prefix(emb, dim), columns=[f"d{dim}_{j}" for j in range(dim)])


def drift_method(method: str, dim: int, pca_components: int, threshold: float):
    """One of Evidently's EmbeddingsDrift methods, with our threshold (bootstrap off: we calibrate)."""
    # evidently: 4 s to import; only Evidently's scores need it
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
        # scikit-learn: 2 s to import; only the MMD scores need it
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
        # scikit-learn: 2 s to import; only the MMD scores need it
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
    # scipy.stats: 1 s to import; only the class-share test needs it
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
