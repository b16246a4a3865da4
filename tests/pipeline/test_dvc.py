"""`dvc repro` of dvc.yaml in a fresh git repo, then `dvc metrics diff` after a params change."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, small_params

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def sh(*cmd: str, cwd: Path, env: dict) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow  # the whole DVC pipeline, twice
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


VIDEO_DVC = REPO / "pipelines" / "video-dvc" / "dvc.yaml"


def _param(params: dict, dotted: str):
    value = params
    for key in dotted.split("."):
        assert isinstance(value, dict) and key in value, f"{VIDEO_DVC}: params key {dotted} is not in params.yaml"
        value = value[key]
    return value


def _render(text: str, params: dict) -> str:
    """DVC's ${section.key} templating, from params.yaml."""
    return re.sub(r"\$\{([\w.]+)\}", lambda m: str(_param(params, m.group(1))), text)


def test_video_dvc_stages_are_valid_mrl_commands_on_existing_inputs():
    """pipelines/video-dvc/dvc.yaml, checked without running it: every cmd parses as its `mrl` command, every input
    exists or is an earlier stage's output, every output is on the command line, every params key is in params.yaml."""
    import typer

    from mrl.cli import app

    spec = yaml.safe_load(VIDEO_DVC.read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert spec["vars"] == ["../../params.yaml"]
    commands = typer.main.get_command(app).commands
    produced: set[str] = set()
    for name, stage in spec["stages"].items():
        assert stage["wdir"] == "../..", f"{name}: runs in the repository root, like the root dvc.yaml"
        argv = shlex.split(_render(stage["cmd"], params))
        assert argv[:1] == ["mrl"] and argv[1] in commands, f"{name}: {argv[:2]} is not an mrl command"
        commands[argv[1]].make_context(argv[1], argv[2:])  # click.UsageError on an unknown or missing option
        for dep in (_render(d, params) for d in stage["deps"]):
            assert dep in produced or (REPO / dep).exists() or dep == params["ingest"]["input"], f"{name}: {dep}"
        for key in stage.get("params", []):
            _param(params, key)
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage["outs"]]
        assert all(out in argv for out in outs), f"{name}: every output is on the command line"
        produced |= set(outs)


@pytest.mark.slow  # dvc subprocesses in a fresh git repository
def test_dvc_reads_the_video_stages_but_plain_repro_leaves_them_out(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", ".dvcignore", "params.yaml", "pipelines/video-dvc"):
        (repo / item).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, repo / item)
    shutil.copytree(REPO / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    sh("git", "init", "-q", cwd=repo, env=env)
    every = sh("dvc", "stage", "list", "--all", cwd=repo, env=env)  # both files parse, templated, with no clashes
    assert "pipelines/video-dvc/dvc.yaml:promote" in every and "pipelines/video-dvc/dvc.yaml:ingest" in every
    plain = sh("dvc", "stage", "list", cwd=repo, env=env)  # what a plain `dvc repro` runs: ./dvc.yaml
    assert "promote" in plain and "video-dvc" not in plain
