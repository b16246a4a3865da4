"""Embedding drift: is a window of current embeddings still like the reference the index was built on?

The scores are Evidently's (`EmbeddingsDrift` with the configured method at each nesting prefix the
served funnel uses, and a chi-square test of class shares). The thresholds are ours: Evidently's
defaults are fixed numbers whose false-alarm rate depends on the data, so at promotion every threshold
is calibrated on same-distribution windows drawn from held-back reference rows (see `calibrate`).

Beside them, where the window is the service's query log with its recall audit, a test of the served funnel's
recall on live queries against retrieval.target_recall (`recall`).

Modules, each importing only those above it: results (verdicts), recall (the audited funnel recall test), reference
(the saved reference), scoring, calibration, windows (reading a window), dashboard (Evidently header, tags and
workspace dashboard), check, outputs (report, summary, console table), lookups (the served reference via Milvus and
MLflow), monitor.
Importing the package does not import Evidently.
"""

from mrl.drift.calibration import build_reference, calibrate
from mrl.drift.check import check_drift
from mrl.drift.lookups import served_reference
from mrl.drift.monitor import monitor, monitor_into
from mrl.drift.outputs import format_result, write_outputs
from mrl.drift.recall import read_audit, recall_tests
from mrl.drift.reference import Reference, load_reference, reference_path, save_reference
from mrl.drift.results import CLASS_TEST, EXIT_DRIFT, DriftResult, TestResult
from mrl.drift.scoring import score_window
from mrl.drift.windows import read_window

__all__ = [
    "CLASS_TEST", "EXIT_DRIFT", "DriftResult", "Reference", "TestResult", "build_reference", "calibrate", "check_drift",
    "format_result", "load_reference", "monitor", "monitor_into", "read_audit", "read_window", "recall_tests",
    "reference_path", "save_reference", "score_window", "served_reference", "write_outputs",
]
