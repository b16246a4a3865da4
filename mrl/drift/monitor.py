"""`mrl drift` and the drift pipeline step: read the window, check it against the served collection's reference,
write the outputs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mrl.config import Config, parse_params
from mrl.drift.check import check_drift
from mrl.drift.lookups import served_reference
from mrl.drift.outputs import format_result, write_outputs
from mrl.drift.recall import read_audit, recall_tests
from mrl.drift.reference import load_reference
from mrl.drift.results import DriftResult
from mrl.drift.windows import read_window


def monitor(cfg: Config, current: str | Path, out_dir: str | Path, reference: str | Path | None = None,
            split: str | None = None, workspace: str | Path | None = None, milvus_uri: str | None = None,
            tracking_uri: str | None = None, log: Callable[[str], None] = print) -> DriftResult:
    """`mrl drift`: read the window, compare it with the served collection's reference (and, where the window is a
    query log with the service's recall audit, test the funnel's recall), write the report, summary and workspace
    snapshot. Bad input raises MRLError before anything is written."""
    ref_path = Path(reference) if reference else served_reference(cfg, milvus_uri, tracking_uri, log)
    ref = load_reference(ref_path)

    def embed(x: np.ndarray) -> np.ndarray:
        # mrl.champion imports mlflow and torch (4 s); only windows to embed need it
        from mrl.champion import embed_with

        log(f"embedding {len(x)} items with {ref.meta.get('model_uri')}")
        return embed_with(ref.meta["model_uri"], x, cfg.evaluate.batch_size, "embedding window", tracking_uri)

    emb, labels = read_window(current, split, embed if ref.meta.get("model_uri") else None)
    # The service's recall audit beside its query log: the served funnel's recall, tested against its target.
    audit = read_audit(current)
    recall, audited = ([], None) if audit is None else recall_tests(
        audit, cfg.retrieval.target_recall, cfg.drift.false_alarm_rate, ref.meta.get("collection"))
    result, snapshot = check_drift(ref, emb, labels, cfg.drift, str(current), log, recall)
    result.reference_meta, result.audit = {**ref.meta, "path": str(ref_path)}, audited
    return write_outputs(result, snapshot, out_dir, workspace, cfg.drift.project)


def monitor_into(params_yaml: str, current: str, report_path: str, summary_path: str, split: str = "",
                 reference: str = "", tracking_uri: str = "", milvus_uri: str = "") -> tuple[bool, dict[str, Any]]:
    """`monitor` for a pipeline step: report and summary to the step's output files; (drifted, metadata)."""
    cfg = parse_params(params_yaml, "params_yaml")
    with tempfile.TemporaryDirectory() as out:
        result = monitor(cfg, current, out, reference or None, split or None, cfg.drift.workspace, milvus_uri or None,
                         tracking_uri or None)
        shutil.copyfile(result.report_html, report_path)
        shutil.copyfile(result.summary_json, summary_path)
    print(format_result(result))
    return result.drifted, {t.name: t.score for t in result.tests} | {"drifted": result.drifted}
