"""How drift checks read in Evidently: the report's header, the snapshot's tags, the workspace dashboard.

A check's snapshot gets a header (verdict, model, collection, window sizes, time, and each score with its
threshold and what it measures) and is tagged with the collection, model version and verdict. The workspace
project gets a dashboard tab: per prefix dim, the drift score over time against its calibrated threshold, and
the class-share p-value against its significance level, and where the window has the service's recall audit, the
served funnel's mean audited recall@k against retrieval.target_recall. Evidently's panels plot metric values only (no
reference lines), so each threshold (and the recall target) is logged in the snapshot as a metric of its own
(`CalibratedThreshold`) and drawn as a second series; the audited recall is a metric too (`FunnelRecall`).
Imports Evidently: import it where a report is made, not at the top of a module.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from evidently.core.metric_types import SingleValueCalculation, SingleValueMetric
from evidently.legacy.renderers.html_widgets import WidgetSize, table_data, text_widget

from mrl.drift.recall import describe_recall, is_recall_test
from mrl.drift.results import CLASS_TEST, DriftResult, TestResult

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from evidently.ui.workspace import Workspace

TAB = "Embedding drift"
# What each EmbeddingsDrift method's score is; for all of them a larger score means more drift.
METHOD_SCORES = {
    "mmd": "maximum mean discrepancy (MMD) between reference and current embeddings",
    "model": "ROC AUC of a classifier telling current from reference embeddings (0.5 = indistinguishable)",
    "distance": "euclidean distance between the reference and current mean embeddings",
    "ratio": "share of embedding components whose distribution drifted",
}
METHOD_LABELS = {"mmd": "MMD", "model": "classifier AUC", "distance": "mean distance", "ratio": "drifted share"}
CLASS_SCORE = "chi-square test p-value of the class shares"
RECALL_SCORE = "served funnel's mean recall@k on audited live queries, against exact full-dim search"


class CalibratedThreshold(SingleValueMetric):
    """A drift test's calibrated threshold as a metric value, so dashboard panels can plot it beside the score."""

    test_name: str  # "d8", ..., "class_share"
    threshold: float


class CalibratedThresholdCalculation(SingleValueCalculation[CalibratedThreshold]):
    def calculate(self, context, current_data, reference_data):
        result = self.result(self.metric.threshold)
        result.widget = []  # the report's header table shows it with its score; no widget of its own
        return result

    def display_name(self) -> str:
        what = "Recall target" if is_recall_test(self.metric.test_name) else "Calibrated threshold"
        return f"{what}: {self.metric.test_name}"


class FunnelRecall(SingleValueMetric):
    """A funnel recall test's score (mean audited recall@k, mrl.drift.recall) as a metric value, for the dashboard."""

    test_name: str  # "funnel_recall@10"
    recall: float


class FunnelRecallCalculation(SingleValueCalculation[FunnelRecall]):
    def calculate(self, context, current_data, reference_data):
        result = self.result(self.metric.recall)
        result.widget = []  # the report's header table shows it with the target and the audited queries
        return result

    def display_name(self) -> str:
        return f"Audited funnel recall: {self.metric.test_name}"


def threshold_metrics(thresholds: dict[str, float]) -> list[CalibratedThreshold]:
    """One metric per test name ("d8", "class_share"), valued at the threshold the check uses."""
    return [CalibratedThreshold(test_name=name, threshold=float(value)) for name, value in thresholds.items()]


def recall_metrics(tests: list[TestResult]) -> list:
    """Per funnel recall test, its mean audited recall and its target, as metrics."""
    return [m for t in tests for m in (FunnelRecall(test_name=t.name, recall=float(t.score)),
                                       CalibratedThreshold(test_name=t.name, threshold=float(t.threshold)))]


# ---------------------------------------------------------------- the snapshot: header, tags, metadata

def describe(name: str, method: str, class_source: str | None = None) -> tuple[str, str]:
    """(what the score is, when it means drift) for a test name."""
    if name == CLASS_TEST:
        shares = "nearest-centroid predicted classes" if class_source == "predicted" else "labelled classes"
        return f"{CLASS_SCORE} ({shares}, current vs reference)", "below the significance level"
    if is_recall_test(name):
        return RECALL_SCORE, "its upper confidence bound is below the target (retrieval.target_recall)"
    return f"{METHOD_SCORES.get(method, method + ' drift score')}, {name} prefix", "above the threshold"


def _meta(result: DriftResult) -> dict[str, str]:
    meta = result.reference_meta
    return {"collection": str(meta.get("collection", "reference")), "model_name": str(meta.get("model_name", "")),
            "model_version": str(meta.get("model_version", "")), "verdict": "drift" if result.drifted else "no drift"}


def tags(result: DriftResult) -> list[str]:
    """Tags to filter snapshots by in the UI: collection, model version, verdict."""
    m = _meta(result)
    return [m["collection"], f"model-v{m['model_version']}" if m["model_version"] else "model-unknown",
            m["verdict"].replace(" ", "-")]


def metadata(result: DriftResult) -> dict[str, str]:
    """The check's facts as snapshot metadata: flat strings only (the UI's dashboard fails on lists and dicts)."""
    return {**_meta(result), "checked_at": result.checked_at, "method": result.method,
            "class_source": result.class_source or "none", "current_rows_read": str(result.current_rows),
            "current_rows_compared": str(result.compared_rows), "reference_rows": str(result.reference_rows),
            "recalibrated": str(result.recalibrated).lower(),
            "drifted_tests": ",".join(t.name for t in result.tests if t.drifted) or "none",
            "reference_path": str(result.reference_meta.get("path", "")),
            **{f"score.{t.name}": f"{t.score:.6g}" for t in result.tests},
            **{f"threshold.{t.name}": f"{t.threshold:.6g}" for t in result.tests},
            **{f"audit.k{k}.{key}": str(v) for k, row in (result.audit or {}).get("by_k", {}).items()
               for key, v in row.items()}}


def header_widgets(result: DriftResult) -> list:
    """The report's first widgets: what was checked against what, the verdict, and every score with its rule."""
    m = _meta(result)
    model = f"{m['model_name']} v{m['model_version']}" if m["model_version"] else "unknown"
    drifted = [t.name for t in result.tests if t.drifted]
    verdict = f"DRIFT ({', '.join(drifted)})" if drifted else "no drift"
    rate, draws = result.reference_meta.get("false_alarm_rate"), result.reference_meta.get("calibration_draws")
    calibrated = (f"on {draws} same-distribution windows for a false-alarm rate of {rate:.1%} per check"
                  if isinstance(rate, float) and draws else "on same-distribution windows")
    if result.recalibrated:
        calibrated += " (recalibrated for this window, smaller than the calibrated size)"
    text = (f"## Embedding drift check: {verdict}\n\n"
            f"**Collection** {m['collection']} · **model** {model} · **checked** {result.checked_at}\n\n"
            f"**Windows:** current {result.compared_rows} rows compared ({result.current_rows} read) · "
            f"reference {result.reference_rows} rows · method {result.method}\n\n"
            f"Thresholds are calibrated {calibrated}. Embedding scores grow as the windows move apart: drift when "
            "**above** the threshold. The class-share score is a p-value: drift when **below** the significance level. "
            "The widgets below are Evidently's; their 'drift detected' labels use the same thresholds.")
    recall = [describe_recall(result.audit, t.name) for t in result.tests if is_recall_test(t.name)]
    if recall:
        text += ("\n\n**Funnel recall** (the service's live recall audit; score: mean recall, threshold: the target):\n\n"
                 + "\n\n".join(f"- {line}" for line in recall))
    rows = []
    for t in result.tests:
        what, rule = describe(t.name, result.method, result.class_source)
        rows.append([t.name, what, f"{t.score:.4g}", f"{t.threshold:.4g}", rule, "DRIFT" if t.drifted else "ok"])
    table = table_data(title="Scores and calibrated thresholds", size=WidgetSize.FULL,
                       column_names=["test", "what the score is", "score", "threshold", "drift when", "verdict"],
                       data=rows)
    return [text_widget(text=text, title="", size=WidgetSize.FULL), table]


def annotate(snapshot: Snapshot, result: DriftResult) -> Snapshot:
    """The snapshot with the header before Evidently's widgets, and the check's tags, metadata and name."""
    from evidently.core.report import Snapshot

    # Tags and metadata are given to Report.run, before the verdict exists; the snapshot model is the
    # public way to set them afterwards.
    model = snapshot.to_snapshot_model()
    model.tags = [*model.tags, *tags(result)]
    model.metadata = {**model.metadata, **metadata(result)}
    model.widgets = [*header_widgets(result), *model.widgets]
    m = _meta(result)
    model.name = f"{m['collection']}: {m['verdict']}"
    return Snapshot.load_model(model)


# ---------------------------------------------------------------- the workspace dashboard

def panel_id(project_id, key: str) -> uuid.UUID:
    # Stable ids per project and panel: a second check replaces the panel instead of adding another.
    return uuid.uuid5(uuid.UUID(str(project_id)), f"mrl-drift/{key}")


def wanted_panels(project_id, tests: list[str], method: str) -> list:
    """The tab's panels, in order: how to read them, one per prefix dim, then class shares."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel, text_panel

    threshold = CalibratedThreshold.__get_type__()
    label, meaning = METHOD_LABELS.get(method, method), METHOD_SCORES.get(method, method)
    panels = [text_panel(
        "How to read these plots",
        f"Embedding scores ({meaning}) drift when above their calibrated "
        f"threshold. Class shares: {CLASS_SCORE}, drift when below its significance level. Thresholds are "
        "calibrated per reference at promotion; a new reference starts new series. Funnel recall (where the service "
        "audits its searches): the mean audited recall@k, drift when confidently below retrieval.target_recall. "
        "Each point is one mrl drift check, tagged with its collection, model version and verdict.")]
    panels[0].id = panel_id(project_id, "guide")
    for name in tests:
        if is_recall_test(name):
            panel = recall_panel(name, threshold)
        elif name == CLASS_TEST:
            panel = line_plot_panel(
                "Class shares: chi-square p-value vs significance level",
                values=[PanelMetric(legend="p-value (drift below the level)", metric="ValueDrift",
                                    metric_labels={"column": CLASS_TEST}),
                        PanelMetric(legend="significance level (calibrated)", metric=threshold,
                                    metric_labels={"test_name": CLASS_TEST})],
                description=f"{CLASS_SCORE} (labels, else nearest-centroid predictions); drift when below the level",
                size="half")
        else:
            panel = line_plot_panel(
                f"{name} prefix: embedding drift score vs threshold",
                values=[PanelMetric(legend=f"{name} {label} score", metric="EmbeddingsDrift",
                                    metric_labels={"embeddings_name": name}),
                        PanelMetric(legend=f"{name} threshold (calibrated)", metric=threshold,
                                    metric_labels={"test_name": name})],
                description=f"{meaning}; drift when above the threshold",
                size="half")
        panel.id = panel_id(project_id, name)
        panels.append(panel)
    return panels


def recall_panel(name: str, threshold):
    """The served funnel's mean audited recall@k against its target, over checks."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    at_k = name.split("_", 1)[1]  # "recall@10"
    return line_plot_panel(
        f"Served funnel: audited {at_k} vs target",
        values=[PanelMetric(legend=f"mean audited {at_k}", metric=FunnelRecall.__get_type__(),
                            metric_labels={"test_name": name}),
                PanelMetric(legend="target (retrieval.target_recall)", metric=threshold,
                            metric_labels={"test_name": name})],
        description=f"{RECALL_SCORE}; drift when its upper confidence bound is below the target", size="half")


def ensure_dashboard(ws: Workspace, project_id, tests: list[str], method: str) -> None:
    """Add or refresh the drift tab's panels; panels and tabs someone else added stay as they are."""
    from evidently.sdk.models import DashboardTabModel

    # Written as a whole model: ProjectDashboard.add_panel appends a panel to an existing tab twice
    # (evidently 0.7.23) and has no way to replace one.
    dashboard = ws.get_dashboard(project_id)
    wanted = wanted_panels(project_id, tests, method)
    index = {p.id: i for i, p in enumerate(dashboard.panels)}
    for panel in wanted:
        if panel.id in index:
            dashboard.panels[index[panel.id]] = panel
        else:
            dashboard.panels.append(panel)
    tab = next((t for t in dashboard.tabs if t.title == TAB), None)
    if tab is None:
        tab = DashboardTabModel(id=panel_id(project_id, "tab"), title=TAB, panels=[])
        dashboard.tabs.insert(0, tab)
    ours = [p.id for p in wanted]
    tab.panels = ours + [p for p in dict.fromkeys(tab.panels) if p not in ours]
    ws.save_dashboard(project_id, dashboard)


def add_to_workspace(snapshot: Snapshot, result: DriftResult, workspace: str, project: str) -> str:
    """Add the (annotated) snapshot to the local workspace's project, creating it and its dashboard; its id."""
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(workspace)
    found = ws.search_project(project)
    proj = found[0] if found else ws.create_project(project, description="mrl embedding drift checks")
    ensure_dashboard(ws, proj.id, [t.name for t in result.tests], result.method)
    return str(ws.add_run(proj.id, snapshot).id)
