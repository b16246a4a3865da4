"""What `mrl index retier` decides without Milvus: versioned names ordered by (model version, retier n), and which
logged queries it takes (the newest, up to the limit, across the query log's files)."""

import numpy as np
import pytest

from mrl.errors import MRLError
from mrl.retier import read_query_log
from mrl.retrieval import milvus_index as mi


class Names:
    def __init__(self, *names):
        self.names = list(names)

    def list_collections(self):
        return self.names


def test_retiered_collections_sort_after_their_version_and_before_the_next():
    assert mi.version_key("items", "items_v2") == (2, 0) and mi.version_key("items", "items_v2_t3") == (2, 3)
    for other in ("items_v2_frames", "items_promotion_lock", "itemsx_v1", "items_v2_t", "items_v2_t1_x"):
        assert mi.version_key("items", other) is None, other
    client = Names("items_v10", "items_v2_t1", "items_v2", "items_v2_t10", "items_v2_t2", "videos_v1", "items_v1_frames")
    assert mi.versioned_collections(client, "items") == [
        "items_v2", "items_v2_t1", "items_v2_t2", "items_v2_t10", "items_v10"]
    assert mi.versioned_collections(client, "videos") == ["videos_v1"]


def test_the_newest_logged_queries_up_to_the_limit(tmp_path):
    log = tmp_path / "query_log"
    log.mkdir()
    for n in range(3):  # 0..99, 100..199, 200..249 in the first dim; named by time as the service names them
        rows = np.arange(100 * n, min(100 * n + 100, 250), dtype=np.float32)
        np.save(log / f"queries-{1_700_000_000_000_000_000 + n}.npy", np.stack([rows, np.ones_like(rows)], axis=1))
    (log / "audit-1.jsonl").write_text("not queries\n")  # other files beside the log are not read
    queries, described = read_query_log(log, 2, 120)
    assert queries.shape == (120, 2) and queries[0, 0] == 130 and queries[-1, 0] == 249
    assert described == f"the 120 newest of 250 logged queries ({log}, written 2023-11-14 22:13 UTC to 2023-11-14 22:13 UTC)"
    assert len(read_query_log(log, 2, 1000)[0]) == 250


def test_no_query_log_is_no_queries_unless_one_was_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default, artifacts/query_log, does not exist here
    queries, described = read_query_log(None, 8, 500)
    assert queries.shape == (0, 8) and described == "no query log at artifacts/query_log"
    with pytest.raises(MRLError, match="nowhere: query log directory not found"):
        read_query_log(tmp_path / "nowhere", 8, 500)
