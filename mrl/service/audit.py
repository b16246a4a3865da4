"""The live recall audit: does the served funnel still reach its recall on the queries users actually send?

Promotion chose the funnel on held-out catalogue items; live queries come from elsewhere (other photos, other k), and
once served nothing else watches the funnel's recall. So a sampled share of external item searches
(retrieval.audit_fraction; not id searches, not explorer runs: the query log's rule) is re-run as an exact full-dim
search over the whole served collection (mrl.retrieval.exact) and compared with the top-k the user got: recall@k.

It never delays a response: the search hands the query to a bounded queue (`QUEUE_SIZE`) and returns; one background
thread runs the exact searches (and with the milvus backend, their Milvus round trips). A query that finds the queue
full is dropped and counted, never waited for. Results go to /metrics (a rolling recall@k over the last `ROLLING`
audited queries of the served collection, a histogram, counts of audited, dropped and failed queries, the exact
search's time), to /readyz, and to `audit-<ns>.jsonl` files beside the query log, rotated with it, which
`mrl drift --current <query log>` tests against retrieval.target_recall (mrl.drift.recall).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mrl.retrieval import exact

QUEUE_SIZE = 100  # audited queries waiting for their exact search; the next one is dropped
ROLLING = 1000  # audited queries behind the rolling recall gauge
RECALL_BUCKETS = (0.1, 0.25, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
NICE = 10  # the audit thread's nice value: background work


def recall_at_k(got: list[str], truth: list[str]) -> float:
    """Share of the exact top-k that the funnel returned (1.0 for an empty truth: nothing to miss)."""
    found = set(got)
    return sum(item in found for item in truth) / len(truth) if truth else 1.0


@dataclass
class AuditJob:
    """One served search to audit: the index that answered it, the query, and the ids the user got."""

    index: object  # MemoryFunnelIndex or MilvusFunnelIndex: the collection that answered, even after a reload
    query: np.ndarray  # full-dim query embedding
    got: list[str]
    k: int
    collection: str
    funnel: str
    at: float  # Unix time of the search


class AuditMetrics:
    """The audit's Prometheus metrics, in the service's registry."""

    def __init__(self, registry: CollectorRegistry):
        self.recall = Gauge("mrl_funnel_recall_at_k", f"served funnel's mean recall@k over the last {ROLLING} "
                            "audited queries of the served collection (k as each user asked)", registry=registry)
        self.recall_hist = Histogram("mrl_funnel_audit_recall", "recall@k of each audited query",
                                     buckets=RECALL_BUCKETS, registry=registry)
        self.audited = Counter("mrl_funnel_audited_total", "searches re-run as exact search", registry=registry)
        self.dropped = Counter("mrl_funnel_audit_dropped_total", "sampled searches dropped: the audit queue was full",
                               registry=registry)
        self.failed = Counter("mrl_funnel_audit_failures_total", "audits whose exact search failed", ["error"],
                              registry=registry)
        self.exact_seconds = Histogram("mrl_funnel_audit_exact_seconds", "time of an audit's exact search",
                                       registry=registry)


class AuditLog:
    """Audit rows as `audit-<ns>.jsonl` files in the query log's folder: written (atomically) every `rows_per_file`
    rows, once the oldest buffered row is `max_age_s` old, and at shutdown, like the query log; files older than its
    oldest `queries-*.npy` belong to a window it already dropped and are deleted, and at most `max_files` are kept."""

    def __init__(self, directory: Path, rows_per_file: int = 1000, max_files: int = 20, max_age_s: float = 60.0):
        self.directory, self.rows_per_file, self.max_files, self.max_age_s = directory, rows_per_file, max_files, max_age_s
        self._rows: list[dict] = []
        self._first_at = 0.0
        self._lock = threading.Lock()

    def append(self, row: dict) -> None:
        with self._lock:
            if not self._rows:
                self._first_at = time.monotonic()
            self._rows.append(row)
            if len(self._rows) >= self.rows_per_file or time.monotonic() - self._first_at >= self.max_age_s:
                self._flush()

    def flush(self, stale_only: bool = False) -> None:
        with self._lock:
            if not stale_only or (self._rows and time.monotonic() - self._first_at >= self.max_age_s):
                self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"audit-{time.time_ns()}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in self._rows))
        os.replace(tmp, path)
        self._rows = []
        self._prune()

    def _prune(self) -> None:
        files = sorted(self.directory.glob("audit-*.jsonl"), key=file_ns)
        oldest_queries = min((file_ns(p) for p in self.directory.glob("queries-*.npy")), default=0)
        for old in files[: -self.max_files] + [p for p in files[-self.max_files:] if file_ns(p) < oldest_queries]:
            old.unlink(missing_ok=True)


def file_ns(path: Path) -> int:
    """The nanosecond time in a log file's name (queries-<ns>.npy, audit-<ns>.jsonl); 0 if it has none."""
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class Auditor:
    """Samples served searches into a bounded queue; one daemon thread audits them (see the module's docstring)."""

    def __init__(self, fraction: float, metrics: AuditMetrics, log: AuditLog, queue_size: int = QUEUE_SIZE):
        self.fraction, self.metrics, self.log = fraction, metrics, log
        self._queue: queue.Queue[AuditJob] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._window: deque[float] = deque(maxlen=ROLLING)  # recalls of the collection audited last
        self._window_of: str | None = None
        self._exact: tuple[object, exact.ExactSearch] | None = None  # (index, its exact search), reused until a reload
        self._counts = {"audited": 0, "dropped": 0, "failed": 0}
        self._state_lock = threading.Lock()  # counts and window: searches drop on several threads, /readyz reads
        self._reported: set[str] = set()  # error types already printed once

    def offer(self, index, query: np.ndarray, got: list[str], k: int, collection: str, funnel: str) -> bool:
        """Queue a served search for its audit with probability `fraction`; never blocks. True if queued."""
        if random.random() >= self.fraction:
            return False
        self._start()
        try:
            self._queue.put_nowait(AuditJob(index, query, got, k, collection, funnel, time.time()))
        except queue.Full:
            self._count("dropped")
            self.metrics.dropped.inc()
            return False
        return True

    def _start(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="mrl-recall-audit", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        if sys.platform.startswith("linux"):  # a thread's own nice value (Linux only): a busy CPU serves requests first
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        while True:
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            try:
                self.audit(job)
            except Exception as e:  # a collection dropped under us, Milvus unreachable: counted, never fatal
                self._count("failed")
                self.metrics.failed.labels(type(e).__name__).inc()
                if type(e).__name__ not in self._reported:
                    self._reported.add(type(e).__name__)
                    print(f"recall audit: exact search failed ({type(e).__name__}: {str(e)[:200]})", flush=True)

    def audit(self, job: AuditJob) -> float:
        """The job's recall@k against exact search, recorded everywhere; runs on the audit thread."""
        if self._exact is None or self._exact[0] is not job.index:
            self._exact = (job.index, exact.exact_search_for(job.index))
        truth, ms = self._exact[1](job.query, job.k)
        recall = recall_at_k(job.got, [h["id"] for h in truth])
        with self._state_lock:
            if job.collection != self._window_of:  # a new collection: its funnel's recall starts afresh
                self._window.clear()
                self._window_of = job.collection
            self._window.append(recall)
            self._counts["audited"] += 1
            rolling = float(np.mean(self._window))
        self.metrics.audited.inc()
        self.metrics.recall.set(rolling)
        self.metrics.recall_hist.observe(recall)
        self.metrics.exact_seconds.observe(ms / 1000)
        self.log.append({"time": round(job.at, 3), "recall": recall, "k": job.k, "collection": job.collection,
                         "funnel": job.funnel, "exact_ms": round(ms, 3)})
        return recall

    def _count(self, what: str) -> None:
        with self._state_lock:
            self._counts[what] += 1

    def stop(self, timeout_s: float = 10.0) -> None:
        """Audit what is queued (for up to `timeout_s`), then write the last rows."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.log.flush()

    def describe(self) -> dict:
        """For /readyz: the sampled share, counts, and the rolling recall@k (None before the first audit)."""
        with self._state_lock:
            window, counts, collection = list(self._window), dict(self._counts), self._window_of
        return {"fraction": self.fraction, **counts, "queued": self._queue.qsize(),
                "recall_at_k": round(float(np.mean(window)), 4) if window else None, "window": len(window),
                "collection": collection}
