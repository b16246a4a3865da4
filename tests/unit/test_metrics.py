import numpy as np
import pytest

from mrl.metrics import average_precision_at_k, cosine_top_k, linear_probe_top1, retrieval_metrics


def test_cosine_top_k_ranks_by_angle_not_length():
    database = np.array([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    queries = np.array([[1.0, 0.0], [-1.0, -0.1]], dtype=np.float32)
    # [10, 1] is far longer than [1, 0] but at an angle: cosine puts [1, 0] first.
    assert cosine_top_k(queries, database, 2).tolist() == [[0, 1], [3, 2]]
    assert cosine_top_k(queries[:1], database, 10).shape == (1, 4)  # k capped at the database size


def test_average_precision_hand_computed():
    # ranks:        1  2  3  4     relevant in db
    rel = np.array([[1, 0, 1, 0],  # 3 -> (1/1 + 2/3) / min(4, 3) = 0.5556
                    [0, 1, 1, 1],  # 10 -> (1/2 + 2/3 + 3/4) / 4 = 0.4792
                    [0, 0, 0, 0],  # 5 -> 0
                    [1, 1, 1, 1]])  # 2 -> precision sum 4 / min(4, 2)... capped: (1+1)/2 at k=2
    n_rel = np.array([3, 10, 5, 2])
    ap = average_precision_at_k(rel, n_rel, 4)
    assert ap[:3] == pytest.approx([(1 + 2 / 3) / 3, (1 / 2 + 2 / 3 + 3 / 4) / 4, 0.0])
    assert average_precision_at_k(rel[3:], n_rel[3:], 2) == pytest.approx([1.0])


def test_retrieval_metrics_hand_computed():
    database_labels = np.array([0, 0, 1, 1, 1, 2])
    query_labels = np.array([0, 1, 2])
    neighbor_labels = np.array([
        [0, 1, 0],  # hit at 1 -> AP@3 = (1 + 2/3) / min(3, 2)
        [0, 1, 1],  # hit at 2 -> AP@3 = (1/2 + 2/3) / 3
        [0, 1, 1],  # no hit
    ])
    out = retrieval_metrics(neighbor_labels, query_labels, database_labels, map_k=3, recall_ks=[1, 2])
    assert out["knn_top1"] == pytest.approx(1 / 3)
    assert out["recall_at_1"] == pytest.approx(1 / 3)
    assert out["recall_at_2"] == pytest.approx(2 / 3)
    assert out["map_at_3"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3) / 3 + 0) / 3)


def test_linear_probe_separates_separable_data_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = np.eye(3)[y] * 3 + rng.normal(0, 0.3, (300, 3))
    assert linear_probe_top1(x[:200], y[:200], x[200:], y[200:]) > 0.95
    noise = rng.normal(0, 1, (300, 3))
    assert linear_probe_top1(noise[:200], y[:200], noise[200:], y[200:]) < 0.6
