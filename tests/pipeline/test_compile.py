"""The checked-in pipeline YAML is what the code compiles to (recompile with `mrl pipeline compile`)."""

import yaml

from pipelines.training import COMPILED, compile_pipeline


def test_training_pipeline_compiles_to_the_checked_in_yaml(tmp_path):
    fresh = compile_pipeline(tmp_path / "training.yaml")
    assert yaml.safe_load(fresh.read_text()) == yaml.safe_load(COMPILED.read_text()), \
        "pipelines/training.yaml is stale: run `mrl pipeline compile` and commit it"


def test_every_step_runs_in_the_project_image_without_installs():
    spec = yaml.safe_load(COMPILED.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{s}-op" for s in ("ingest", "validate", "train", "evaluate", "register", "promote")}
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == "ghcr.io/mrl-platform/mrl:0.1.0"
        assert "pip install" not in " ".join(container["command"])
