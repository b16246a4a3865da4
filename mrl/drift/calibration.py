"""Calibration: thresholds from same-distribution windows of the reference's held-back rows, and the reference
built and calibrated at promotion."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mrl.config import DriftConfig
from mrl.drift.reference import Reference
from mrl.drift.results import CLASS_TEST
from mrl.drift.scoring import class_centroids, class_share_pvalue, embedding_scorers, predict_classes
from mrl.errors import MRLError
from mrl.progress import progress


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
