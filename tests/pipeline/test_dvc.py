"""`dvc repro` of dvc.yaml in a fresh git repo, then `dvc metrics diff` after a params change."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, small_params

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def sh(*cmd: str, cwd: Path, env: dict) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_dvc_repro_reproduces_the_run_and_diffs_metrics_per_dim(raw_dir, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", ".dvcignore", "mrl"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, repo / item)
    shutil.copytree(REPO / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    (repo / "params.yaml").write_text(small_params(raw_dir))
    bin_dir = str(Path(sys.executable).parent)  # where `mrl` and `dvc` are installed
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}
    sh("git", "init", "-q", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "project", cwd=repo, env=env)

    sh("dvc", "repro", cwd=repo, env=env)
    registration = json.loads((repo / "artifacts/registry/registration.json").read_text())
    assert registration["gate"]["promoted"] and registration["registration"]["version"] == "1"
    assert json.loads((repo / "artifacts/metrics/eval.json").read_text()).keys() == {"4", "8", "16"}
    assert json.loads((repo / "artifacts/index/promotion.json").read_text())["collection"] == "items_v1"
    drift = json.loads((repo / "artifacts/drift/report/summary.json").read_text())
    assert drift["drifted"] is False and drift["reference_meta"]["collection"] == "items_v1"
    sh("dvc", "push", cwd=repo, env=env)  # the default local remote takes the data and model
    assert any((repo / ".dvc-storage").rglob("*"))

    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "run 1", cwd=repo, env=env)
    (repo / "params.yaml").write_text(small_params(raw_dir, train={"epochs": 2, "batch_size": 32}))
    out = sh("dvc", "repro", cwd=repo, env=env)
    assert "Stage 'ingest' didn't change, skipping" in out and "Running stage 'train'" in out
    diff = json.loads(sh("dvc", "metrics", "diff", "--json", cwd=repo, env=env))["artifacts/metrics/eval.json"]
    assert diff and all(key.split(".")[0] in {"4", "8", "16"} for key in diff)
