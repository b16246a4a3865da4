"""The check: a window compared with the reference in an Evidently report, whose metric values are the scores
the verdict is made of."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from mrl.config import DriftConfig
from mrl.drift.calibration import calibrate
from mrl.drift.reference import Reference
from mrl.drift.results import CLASS_TEST, DriftResult, TestResult
from mrl.drift.scoring import drift_method, predict_classes, prefix_frame, verdicts
from mrl.errors import MRLError


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
            class_key: str | None, recall: list[TestResult]):
    """The Evidently report whose metric values are the verdict's scores (the audited recall's after them)."""
    # evidently (4 s to import) and scikit-learn (2 s); only the report needs them
    import evidently.legacy.metrics.data_drift.embeddings_drift as legacy_embeddings
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from sklearn.decomposition import PCA

    from mrl.drift.dashboard import recall_metrics, threshold_metrics  # import evidently: only the report needs them

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
    return Report([*metrics, *threshold_metrics(used), *recall_metrics(recall)]).run(
        current_data=Dataset.from_pandas(frame(current, cur_cls), data_definition=definition),
        reference_data=Dataset.from_pandas(frame(compared, ref_cls), data_definition=definition),
    )


def check_drift(ref: Reference, current: np.ndarray, labels: np.ndarray | None, cfg: DriftConfig,
                source: str = "current window", log: Callable[[str], None] = print,
                recall: list[TestResult] | None = None):
    """Compare a window (embeddings, optional class names) with the reference. Returns (DriftResult, snapshot).
    `recall`: the window's funnel recall tests (mrl.drift.recall), decided already; they join the report and verdict."""
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

    snapshot = _report(ref, compared, current, ref_cls, cur_cls, thresholds, class_key, recall or [])
    names = [f"d{d}" for d in ref.prefixes] + ([CLASS_TEST] if class_key else [])
    values = [float(m["value"]) for m in snapshot.dict()["metrics"][: len(names)]]  # the scores; thresholds follow
    tests = verdicts(dict(zip(names, values)), thresholds, class_key) + list(recall or [])
    result = DriftResult(
        drifted=any(t.drifted for t in tests), tests=tests, method=ref.method, current_rows=rows_read,
        compared_rows=len(current), reference_rows=len(compared),
        class_source=class_key.split("/")[1] if class_key else None, recalibrated=recalibrated,
        seconds=round(time.perf_counter() - started, 3), reference_meta=ref.meta,
        checked_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return result, snapshot
