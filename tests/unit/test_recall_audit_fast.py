"""The live recall audit's pure parts: recall@k, the worker (never blocks: a full queue drops), the audit log beside
the query log, and the drift check's recall test (the Wilson bound, the minimum count, other collections left out)."""

import json
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mrl.drift.recall import MIN_AUDITED, read_audit, recall_tests, wilson_upper
from mrl.errors import MRLError
from mrl.service.audit import AuditLog, AuditMetrics, Auditor, recall_at_k


class FakeIndex:
    """An index whose exact search returns item-0..item-(k-1), after `delay_s`."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.calls = delay_s, 0

    def exact(self, query, k):
        self.calls += 1
        time.sleep(self.delay_s)
        return [{"id": f"item-{i}", "score": 1.0, "label": "x"} for i in range(k)], 1000 * self.delay_s


def auditor(tmp_path, fraction=1.0, queue_size=100):
    registry = CollectorRegistry()
    return Auditor(fraction, AuditMetrics(registry), AuditLog(tmp_path, max_age_s=3600), queue_size), registry


def test_recall_at_k_is_the_share_of_the_exact_top_k_returned():
    assert recall_at_k(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert recall_at_k(["a", "x", "y", "z"], ["a", "b", "c", "d"]) == 0.25
    assert recall_at_k([], ["a"]) == 0.0 and recall_at_k(["a"], []) == 1.0


def test_a_full_queue_drops_instead_of_blocking(tmp_path):
    audit, registry = auditor(tmp_path, queue_size=2)
    index = FakeIndex(delay_s=0.5)
    started = time.perf_counter()
    queued = [audit.offer(index, np.ones(4), ["item-0"], 2, "items_v1", "f") for _ in range(10)]
    assert time.perf_counter() - started < 0.2  # ten offers against a 0.5 s exact search: none waited
    dropped = 10 - sum(queued)
    assert dropped >= 7 and audit.describe()["dropped"] == dropped  # 2 queued, and 1 the worker may have taken
    assert f"mrl_funnel_audit_dropped_total {float(dropped)}" in generate_latest(registry).decode()
    audit.stop()
    described = audit.describe()
    assert described["audited"] == sum(queued) and described["recall_at_k"] == 0.5 and described["queued"] == 0


def test_the_sampled_share_and_the_rolling_recall(tmp_path):
    audit, registry = auditor(tmp_path, fraction=0.25)
    index = FakeIndex()
    queued = sum(audit.offer(index, np.ones(4), ["item-0", "zz"], 2, "items_v1", "f") for _ in range(400))
    assert 60 < queued < 140  # binomial(400, 0.25): 100 +- 4.5 sd
    audit.stop()
    text = generate_latest(registry).decode()
    assert "mrl_funnel_recall_at_k 0.5" in text and f"mrl_funnel_audited_total {float(queued)}" in text
    assert 'mrl_funnel_audit_recall_bucket{le="0.5"} ' + f"{float(queued)}" in text
    # a new collection (after a promotion) starts the rolling recall afresh
    audit2, _ = auditor(tmp_path / "b")
    for collection, got in [("items_v1", ["zz"]), ("items_v2", ["item-0"])]:
        audit2.offer(index, np.ones(4), got, 1, collection, "f")
    audit2.stop()
    assert audit2.describe()["recall_at_k"] == 1.0 and audit2.describe()["collection"] == "items_v2"


def test_a_failing_exact_search_is_counted_and_the_worker_goes_on(tmp_path):
    class Broken:
        def exact(self, query, k):
            raise RuntimeError("collection dropped")

    audit, registry = auditor(tmp_path)
    audit.offer(Broken(), np.ones(4), ["a"], 1, "items_v1", "f")
    audit.offer(FakeIndex(), np.ones(4), ["item-0"], 1, "items_v1", "f")
    audit.stop()
    assert audit.describe()["failed"] == 1 and audit.describe()["audited"] == 1
    assert 'mrl_funnel_audit_failures_total{error="RuntimeError"} 1.0' in generate_latest(registry).decode()


def write_rows(directory, ns, rows):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"audit-{ns}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def row(recall, k=10, collection="items_v1", funnel="4@12 -> 16"):
    return {"time": 1.0, "recall": recall, "k": k, "collection": collection, "funnel": funnel}


def test_the_audit_log_writes_beside_the_query_log_and_follows_its_window(tmp_path):
    log = AuditLog(tmp_path, rows_per_file=2, max_files=3)
    for i in range(8):
        log.append(row(i / 10))
    files = sorted(tmp_path.glob("audit-*.jsonl"))
    assert len(files) == 3 and not list(tmp_path.glob("*.tmp"))  # rotated: the newest 3 of 4 files
    assert [json.loads(line)["recall"] for line in files[-1].read_text().splitlines()] == [0.6, 0.7]
    np.save(tmp_path / f"queries-{time.time_ns()}.npy", np.ones((1, 4)))  # the query window now starts later
    log.append(row(0.9))
    log.flush()
    assert len(list(tmp_path.glob("audit-*.jsonl"))) == 1  # older audits belong to queries the window dropped
    assert read_audit(tmp_path).recall.tolist() == [0.9]


def test_read_audit_reads_rows_and_names_a_bad_line(tmp_path):
    assert read_audit(tmp_path / "none") is None and read_audit(tmp_path) is None
    write_rows(tmp_path, 1, [row(1.0), row(0.5, k=5)])
    write_rows(tmp_path, 2, [row(0.8, collection="items_v2")])
    audit = read_audit(tmp_path)
    assert audit.recall.tolist() == [1.0, 0.5, 0.8] and audit.k.tolist() == [10, 5, 10] and audit.files == 2
    (tmp_path / "audit-3.jsonl").write_text(json.dumps(row(1.0)) + "\n{not json\n")
    with pytest.raises(MRLError, match=r"audit-3.jsonl: line 2: not an audit row"):
        read_audit(tmp_path)
    (tmp_path / "audit-3.jsonl").write_text(json.dumps(row(1.5)) + "\n")
    with pytest.raises(MRLError, match=r"audit-3.jsonl: line 1: .*out of range"):
        read_audit(tmp_path)


def test_wilson_upper_bound():
    assert wilson_upper(1.0, 100, 2.054) == 1.0
    assert 0.97 < wilson_upper(0.95, 100, 2.054) < 0.99  # 0.95 on 100 queries: confidently below 0.99
    assert wilson_upper(0.95, 10, 2.054) > 0.99  # on 10, not
    assert wilson_upper(0.5, 1000, 2.054) < wilson_upper(0.5, 100, 2.054) < wilson_upper(0.5, 10, 2.054)


@pytest.mark.parametrize("recalls, drifted", [
    ([0.4] * 50, True),  # a bad funnel
    ([1.0] * 50, False),  # a good one
    ([0.2] * (MIN_AUDITED - 1), False),  # too few audited queries for a verdict
    ([1.0] * 45 + [0.9] * 5, False),  # mean 0.99: at the target
    ([1.0] * 80 + [0.8] * 20, True),  # mean 0.96 on 100 queries: confidently below 0.99
])
def test_the_recall_test_alarms_only_when_confidently_below_the_target(tmp_path, recalls, drifted):
    write_rows(tmp_path, 1, [row(r) for r in recalls])
    [test], summary = recall_tests(read_audit(tmp_path), 0.99, 0.02)
    assert test.name == "funnel_recall@10" and test.threshold == 0.99 and test.drifted is drifted
    assert test.score == pytest.approx(np.mean(recalls)) and summary["by_k"]["10"]["queries"] == len(recalls)


def test_the_recall_test_judges_the_references_collection_one_test_per_k(tmp_path):
    write_rows(tmp_path, 1, [row(0.1, collection="items_v1")] * 40 + [row(1.0, collection="items_v2")] * 40
               + [row(0.9, k=5, collection="items_v2")] * 3)
    tests, summary = recall_tests(read_audit(tmp_path), 0.99, 0.02, collection="items_v2")
    assert [(t.name, t.score, t.drifted) for t in tests] == [("funnel_recall@5", 0.9, False),
                                                              ("funnel_recall@10", 1.0, False)]
    assert summary["other_collection_rows"] == 40 and summary["collection"] == "items_v2"
    [old], _ = recall_tests(read_audit(tmp_path), 0.99, 0.02, collection="items_v1")
    assert old.name == "funnel_recall@10" and old.score == pytest.approx(0.1) and old.drifted
    none, summary = recall_tests(read_audit(tmp_path), 0.99, 0.02, collection="items_v3")  # promoted since
    assert none == [] and summary["other_collection_rows"] == 83 and summary["by_k"] == {}
    [last, _], _ = recall_tests(read_audit(tmp_path), 0.99, 0.02)  # no collection named: the one audited last
    assert last.name == "funnel_recall@5"


def test_offers_from_many_threads_are_counted_once_each(tmp_path):
    audit, _ = auditor(tmp_path, queue_size=5)
    index = FakeIndex(delay_s=0.05)
    threads = [threading.Thread(target=lambda: [audit.offer(index, np.ones(4), ["item-0"], 1, "c", "f")
                                                for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    audit.stop()
    described = audit.describe()
    assert described["audited"] + described["dropped"] == 200
