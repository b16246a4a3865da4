"""What a drift check finds: each test's score against its threshold, and the check's verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

EXIT_DRIFT = 3  # `mrl drift` exit code for a detected drift: distinct from 1 (crash) and 2 (bad input)
CLASS_TEST = "class_share"


@dataclass
class TestResult:
    name: str  # "d8", ..., "class_share", "funnel_recall@10"
    score: float  # the method's drift score; class_share: the chi-square p-value; funnel_recall@k: mean audited recall
    threshold: float  # funnel_recall@k: retrieval.target_recall
    drifted: bool


@dataclass
class DriftResult:
    drifted: bool
    tests: list[TestResult]
    method: str
    current_rows: int  # rows in the window as read
    compared_rows: int  # rows compared after sampling
    reference_rows: int
    class_source: str | None  # "labels", "predicted" or None (class shares not tested)
    recalibrated: bool  # thresholds re-derived for a window smaller than the calibrated size
    seconds: float
    reference_meta: dict[str, Any]
    checked_at: str = ""  # UTC, ISO 8601
    report_html: str = ""
    summary_json: str = ""
    snapshot_id: str = ""
    audit: dict[str, Any] | None = None  # the funnel recall tests' audited queries (mrl.drift.recall); None: none

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftResult:
        """The result back from its summary.json (`as_dict`)."""
        return cls(**(d | {"tests": [TestResult(**t) for t in d["tests"]]}))
