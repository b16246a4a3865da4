"""A check's outputs: report.html and summary.json, the snapshot in the Evidently workspace, the console table."""

from __future__ import annotations

import json
from pathlib import Path

from mrl.data.artifact import atomic_write
from mrl.drift.recall import describe_recall, is_recall_test
from mrl.drift.results import CLASS_TEST, DriftResult


def write_outputs(result: DriftResult, snapshot, out_dir: str | Path, workspace: str | Path | None,
                  project: str) -> DriftResult:
    """report.html and summary.json in out_dir; the snapshot added to the local Evidently workspace, whose
    project gets its drift dashboard (see mrl.drift.dashboard)."""
    from mrl.drift.dashboard import add_to_workspace, annotate  # imports evidently (4 s): only the report needs it

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    snapshot = annotate(snapshot, result)  # header with verdict, model, windows and thresholds; tags
    html = out / "report.html"
    snapshot.save_html(str(html))
    result.report_html = str(html)
    if workspace:
        result.snapshot_id = add_to_workspace(snapshot, result, str(workspace), project)
    summary = out / "summary.json"
    result.summary_json = str(summary)
    atomic_write(summary, lambda f: f.write(json.dumps(result.as_dict(), indent=2, default=str).encode()))
    return result


def format_result(result: DriftResult) -> str:
    lines = [f"{'test':<16} {'score':>10} {'threshold':>10}  verdict"]
    for t in result.tests:
        rule = "<" if t.name == CLASS_TEST or is_recall_test(t.name) else ">"  # these alarm below their threshold
        lines.append(f"{t.name:<16} {t.score:>10.4g} {rule}{t.threshold:>9.4g}  {'DRIFT' if t.drifted else 'ok'}")
    lines += [describe_recall(result.audit, t.name) for t in result.tests if is_recall_test(t.name)]
    verdict = "DRIFT" if result.drifted else "no drift"
    lines.append(f"{verdict}: {result.compared_rows} of {result.current_rows} current rows vs {result.reference_rows} "
                 f"reference rows, method {result.method}, {result.seconds:.1f} s")
    return "\n".join(lines)
