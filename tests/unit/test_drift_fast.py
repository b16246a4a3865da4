"""Calibration's fast scores equal Evidently's: the thresholds it sets must mean the same as the scores a check's
Evidently report computes (tests/integration/test_drift.py checks the report against `score_window`)."""

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.chisquare_stattest import chi_stat_test

from mrl.drift.scoring import MMDScorer, class_share_pvalue, embedding_score


@pytest.mark.parametrize(("ref_rows", "cur_rows", "shift"), [
    (300, 200, 0.0),  # both sides under Evidently's 1,000-row bandwidth sample
    (1000, 1000, 0.3),  # a drifted window
    (1200, 1100, 0.1),  # both sides sampled down for the bandwidth
])
@pytest.mark.parametrize(("dim", "pca"), [(8, 16), (64, 16), (32, 0)])
def test_mmd_scorer_equals_evidently(ref_rows, cur_rows, shift, dim, pca):
    rng = np.random.default_rng(ref_rows + dim)
    reference = rng.normal(size=(ref_rows, 64)).astype(np.float32)
    current = (rng.normal(size=(cur_rows, 64)) + shift * rng.normal(size=64)).astype(np.float32)
    evidently_score = embedding_score("mmd", dim, pca, current, reference)
    assert MMDScorer(reference, dim, pca).score(current) == pytest.approx(evidently_score, rel=1e-9, abs=1e-15)


def test_mmd_scorer_scores_many_windows_against_one_reference():
    rng = np.random.default_rng(0)
    reference, pool = rng.normal(size=(400, 32)), rng.normal(size=(2000, 32))
    scorer = MMDScorer(reference, 32, 16)
    for shift in (0.0, 0.5):
        window = pool[rng.choice(2000, 300)] + shift
        assert scorer.score(window) == pytest.approx(embedding_score("mmd", 32, 16, window, reference), rel=1e-9)
    assert scorer.score(pool[:300] + 0.5) > scorer.score(pool[:300])  # a shifted window scores higher


@pytest.mark.parametrize("classes", [(10, 10), (10, 4), (5, 7)])  # same, fewer, and classes the reference lacks
def test_class_share_pvalue_equals_evidently(classes):
    rng = np.random.default_rng(sum(classes))
    reference, current = rng.integers(0, classes[0], 1000), rng.integers(0, classes[1], 400)
    expected, _ = chi_stat_test.func(pd.Series(reference.astype(str)), pd.Series(current.astype(str)), "cat", 0.0)
    assert class_share_pvalue(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-300)
