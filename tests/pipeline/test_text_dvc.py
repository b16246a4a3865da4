"""The root dvc.yaml with `ingest.source: text`: `dvc repro promote` runs ingest -> validate -> train -> evaluate ->
register -> promote on a tiny table embedded by the real MiniLM, through test_dvc_params' probe, and each stage reads
only the params keys and mrl modules it declares (the text keys and mrl/text included)."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers import dvc_project, small_params
from test_dvc_params import ROOT_DVC, SHIM, _dvc, _stages, _undeclared

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("git") is None, reason="needs git")]

WORDS = {  # document -> (train query, test query)
    "cat": ("a small domesticated feline", "a pet that purrs"), "dog": ("a loyal pet that barks", "a pet on a leash"),
    "apple": ("a red or green fruit", "a fruit from an orchard"), "car": ("a vehicle with four wheels", "you drive it"),
    "piano": ("a large keyboard instrument", "hammers and strings"), "river": ("water flowing to the sea", "a stream"),
    "winter": ("the coldest season", "the season of snow"), "bread": ("a food baked from flour", "a bakery loaf"),
}
STAGES = ("ingest", "validate", "train", "evaluate", "register", "promote")  # drift: see docs/text.md's "Not yet"


def test_text_stages_read_only_what_they_declare(tmp_path):
    rows = [{"id": w, "text": w} for w in WORDS]
    rows += [{"id": f"q-{w}-{s}", "text": q, "positive": w, "split": s}
             for w, queries in WORDS.items() for q, s in zip(queries, ("train", "test"))]
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    repo, probe, shim_dir = tmp_path / "repo", tmp_path / "probe", tmp_path / "bin"
    for folder in (repo, probe, shim_dir):
        folder.mkdir()
    params = small_params(
        table, ingest={"source": "text", "input": str(table)},
        text={"nesting_dims": [8, 64, 384], "epochs": 2, "batch_size": 8, "hidden_dim": 16, "eval_k": 3,
              "cache_dir": str(tmp_path / "text-cache")},
        validation={"min_train_items": 4, "min_test_items": 4},
        registry={"model_name": "text-mrl", "min_first": 0.3},
        retrieval={"k": 3, "candidate_d0": [8, 64], "candidate_k0": [4, 8], "cascades": [[384]],
                   "candidate_binary_d0": [64], "target_recall": 0.9, "index_type": "FLAT"})
    dvc_project(repo, params)
    shim = shim_dir / "mrl"
    shim.write_text(SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    env = os.environ | {"PATH": f"{shim_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
                        "MRL_PROBE_DIR": str(probe), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for name in ("MRL_PARAMS_READ_LOG", "MILVUS_URI"):
        env.pop(name, None)
    _dvc(repo, env, "repro", "promote")
    promotion = json.loads((repo / "artifacts/index/promotion.json").read_text())
    assert (promotion["collection"], promotion["rows"]) == ("items_v1", len(WORDS))
    stages = {name: stage for name, stage in _stages(ROOT_DVC).items() if name in STAGES}
    problems = _undeclared(probe, stages)
    assert not problems, "\n".join(problems)
