"""Retraining gets the resolved configuration (command-line overrides included), through the launchers the
front-end passes in: the library never imports pipelines/."""

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrl.cli import app
from mrl.config import config_yaml, load_config, parse_params
from mrl.errors import MRLError
from mrl.retrain import Launchers, on_drift, retrain

ROOT = Path(__file__).resolve().parents[2]


class Recorded:
    def __init__(self):
        self.calls = []

    def launchers(self) -> Launchers:
        return Launchers(run_local=lambda *a: self.calls.append(("local", a)) or "7",
                         submit=lambda *a: self.calls.append(("kfp", a)) or "run-1")


def test_config_yaml_round_trips_with_overrides():
    cfg = load_config(None, ["train.epochs=1", "retrieval.candidate_k0=[20, 40]", "drift.prefixes=[8]"])
    assert parse_params(config_yaml(cfg)) == cfg


@pytest.mark.parametrize("how", ["local", "kfp"])
def test_retrain_forwards_the_overrides_to_the_pipeline(how, monkeypatch):
    monkeypatch.setenv("KFP_HOST", "http://kfp.example:8888")
    cfg = load_config(ROOT / "params.yaml", ["train.epochs=1", "retrieval.k=5"])
    rec = Recorded()
    said = retrain(cfg, how, launchers=rec.launchers())
    (kind, args), = rec.calls
    params_yaml = args[0] if how == "local" else args[1]
    assert kind == how and ("model version 7" in said or "run run-1" in said)
    sent = parse_params(params_yaml)
    assert sent.train.epochs == 1 and sent.retrieval.k == 5 and sent == cfg


def test_on_drift_starts_the_configured_action_with_the_resolved_config():
    cfg = load_config(None, ["drift.on_drift=local", "train.epochs=2"])
    rec = Recorded()
    summary = {"drifted": True, "tests": [{"name": "d8", "drifted": True}, {"name": "d64", "drifted": False}],
               "report_html": "r.html", "reference_meta": {"collection": "items_v1"}}
    assert "model version 7" in on_drift(cfg, summary, launchers=rec.launchers())
    assert parse_params(rec.calls[0][1][0]).train.epochs == 2
    assert "no retraining" in on_drift(load_config(None), summary, launchers=rec.launchers())
    assert len(rec.calls) == 1


def test_local_and_kfp_need_launchers():
    with pytest.raises(MRLError, match="launchers"):
        retrain(load_config(None), "local")


def test_cli_refuses_overrides_that_dvc_repro_would_not_see(monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    out = CliRunner().invoke(app, ["retrain", "--how", "auto", "--set", "train.epochs=1"])
    assert out.exit_code == 2 and "dvc repro reads params.yaml" in out.output


def test_the_library_does_not_import_its_front_ends():
    """mrl/ never imports pipelines/ or components/ (except the CLI, a front-end itself)."""
    offenders = []
    for path in (ROOT / "mrl").rglob("*.py"):
        if path.is_relative_to(ROOT / "mrl" / "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("pipelines", "components")]
    assert offenders == []


def test_drift_and_promotion_do_not_import_each_other():
    """promote builds drift references; drift checks must not need promote (the champion lives in mrl.champion)."""
    imported = {n.module for path in (ROOT / "mrl/drift").glob("*.py") for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.ImportFrom)}
    assert "mrl.promote" not in imported and "mrl.champion" in imported


def test_launchers_load_inside_a_kfp_step():
    """The drift pipeline's retrain step imports pipelines.launch inside the KFP executor, where kfp.compiler cannot
    be imported (_KFP_RUNTIME): pipelines.launch must not import it at module level."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from pipelines.launch import launchers; launchers()"], cwd=ROOT,
                          env={**os.environ, "_KFP_RUNTIME": "true"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
