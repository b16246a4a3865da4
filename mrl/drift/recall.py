"""The served funnel's recall on live queries, as a test of a drift check.

The service's recall audit (mrl.service.audit) writes, beside its query log, each audited query's recall@k: what the
funnel answered against exact full-dim search over the whole collection (`audit-<ns>.jsonl`: time, recall, k,
collection, funnel). A check of that folder tests the window's audited recall against retrieval.target_recall, one
test per k users asked (`funnel_recall@10`), beside the embedding tests. A window without audit files has no such
test.

The rule, per k: the score is the mean audited recall, the threshold the target. Drift when at least `MIN_AUDITED`
queries were audited and even the one-sided upper confidence bound of the mean (Wilson score at level
1 - drift.false_alarm_rate) is below the target: a funnel that truly reaches the target is called drifted at most
that often. The bound treats each audited query as one trial: a query's recall lies in [0, 1], so its variance is at
most m(1 - m) for a mean m, that of a coin with the same mean; the bound is therefore conservative, and assumes
nothing about the k neighbours of one query being independent (they are not). Only rows of the reference's collection
count: rows of one served before a promotion, retier or rollback are left out (and counted in the summary); a window
with none of its rows has no recall test.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from mrl.drift.results import TestResult
from mrl.errors import MRLError

RECALL_TEST = "funnel_recall"  # tests are named funnel_recall@<k>
MIN_AUDITED = 30  # fewer audited queries (at one k) never make a verdict: the normal approximation needs some
FIELDS = ("recall", "k", "collection", "funnel")


def is_recall_test(name: str) -> bool:
    return name.startswith(f"{RECALL_TEST}@")


@dataclass
class AuditWindow:
    """The audited queries of a window: one entry per query."""

    recall: np.ndarray  # recall@k in [0, 1]
    k: np.ndarray
    collection: list[str]
    funnel: list[str]
    files: int


def read_audit(path: str | Path) -> AuditWindow | None:
    """The audit rows of a query-log folder, or None where there are none (not a folder, no audit-*.jsonl). Only files
    from the query window's time are read: none older than its oldest queries-<ns>.npy. MRLError on a bad row."""
    path = Path(path)
    if not path.is_dir():
        return None
    files = sorted(path.glob("audit-*.jsonl"), key=_ns)
    oldest_queries = min((_ns(p) for p in path.glob("queries-*.npy")), default=0)
    files = [f for f in files if _ns(f) >= oldest_queries]
    if not files:
        return None
    rows = [_row(f, n, line) for f in files for n, line in enumerate(f.read_text().splitlines(), 1) if line.strip()]
    if not rows:
        return None
    return AuditWindow(np.array([r["recall"] for r in rows], dtype=np.float64), np.array([r["k"] for r in rows]),
                       [r["collection"] for r in rows], [r["funnel"] for r in rows], len(files))


def _ns(path: Path) -> int:
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _row(path: Path, line_no: int, line: str) -> dict:
    try:
        row = json.loads(line)
        if not isinstance(row, dict) or any(f not in row for f in FIELDS):
            raise ValueError(f"expected an object with {', '.join(FIELDS)}")
        recall, k = float(row["recall"]), int(row["k"])
        if not 0 <= recall <= 1 or k < 1:
            raise ValueError(f"recall {recall} or k {k} out of range")
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise MRLError(f"{path}: line {line_no}: not an audit row ({e})") from None
    return {"recall": recall, "k": k, "collection": str(row["collection"]), "funnel": str(row["funnel"])}


def wilson_upper(mean: float, n: int, z: float) -> float:
    """One-sided upper Wilson score bound of a proportion `mean` observed over `n` trials."""
    z2 = z * z
    centre = mean + z2 / (2 * n)
    spread = z * math.sqrt(max(mean * (1 - mean), 0.0) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def recall_tests(audit: AuditWindow, target: float, false_alarm_rate: float,
                 collection: str | None = None) -> tuple[list[TestResult], dict]:
    """One test per k of the rows of `collection` (the reference's; None: the collection audited last), none where it
    has no rows, and a summary for the check's summary.json: per k the queries, mean recall and upper bound, and the
    rule's constants."""
    collection = collection or audit.collection[-1]
    mine = np.array([c == collection for c in audit.collection])
    z = NormalDist().inv_cdf(1 - false_alarm_rate)
    tests, by_k = [], {}
    for k in sorted(set(audit.k[mine].tolist())):
        recalls = audit.recall[mine & (audit.k == k)]
        mean, n = float(recalls.mean()), len(recalls)
        upper = wilson_upper(mean, n, z)
        tests.append(TestResult(f"{RECALL_TEST}@{k}", mean, target, n >= MIN_AUDITED and upper < target))
        by_k[str(k)] = {"queries": n, "mean": round(mean, 6), "upper_bound": round(upper, 6)}
    funnels = sorted({f for f, m in zip(audit.funnel, mine) if m})
    summary = {"collection": collection, "funnels": funnels, "target": target, "level": 1 - false_alarm_rate,
               "min_audited": MIN_AUDITED, "by_k": by_k, "other_collection_rows": int((~mine).sum()),
               "files": audit.files}
    return tests, summary


def describe_recall(summary: dict | None, name: str) -> str:
    """One line on a recall test: how many queries, mean, bound, and the rule."""
    k = name.split("@", 1)[1]
    row = (summary or {}).get("by_k", {}).get(k)
    if row is None:
        return name
    few = f" (fewer than {MIN_AUDITED}: no verdict)" if row["queries"] < MIN_AUDITED else ""
    return (f"{name}: {row['queries']} audited queries{few} of {summary['collection']} "
            f"({', '.join(summary['funnels'])}), mean recall {row['mean']:.4f}, upper bound {row['upper_bound']:.4f} at "
            f"{summary['level']:.0%}: drift when the bound is below the target {summary['target']:g}")
