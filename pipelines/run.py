"""Run the training or video pipeline: locally with kfp.local (default) or on a Kubeflow Pipelines cluster."""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from pathlib import Path

from pipelines import drift as drift_pipelines
from pipelines import video as video_pipelines
from pipelines.training import COMPILED, training_pipeline


def kfp_client(host: str):
    """A KFP API client; $KFP_TOKEN, when set, is sent as the bearer token (clusters behind an auth proxy)."""
    import os

    import kfp

    return kfp.Client(host=host, existing_token=os.environ.get("KFP_TOKEN") or None)


class QuietKfpOutput:
    """kfp.local's terminal output, kept to what a person reads: each task's start and status and the steps' own
    lines (progress, results, errors). Everything, including what is dropped here (the executor input of every
    task, with the whole params YAML, and the outputs listing), goes to the log file."""

    _BLOCK_START = re.compile(r"Got executor_input:|Task \S+ outputs:")

    def __init__(self, terminal, log_file):
        self.terminal, self.log_file = terminal, log_file
        self._pending, self._skipping = "", None  # None, "json" (until its closing brace) or "outputs" (until ---)

    def write(self, text: str) -> int:
        self.log_file.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if self._shown(line):
                self.terminal.write(line + "\n")
        return len(text)

    def _shown(self, line: str) -> bool:
        if self._skipping == "json":
            if re.fullmatch(r"\s*}\s*", line) and len(line) - len(line.lstrip()) <= self._indent:
                self._skipping = None
            return False
        if self._skipping == "outputs":
            if not line.startswith("-----"):
                return False
            self._skipping = None
        if match := self._BLOCK_START.search(line):
            self._skipping = "json" if match.group().startswith("Got") else "outputs"
            self._indent = len(line) - len(line.lstrip())
            return False
        return "[KFP Executor" not in line

    def flush(self) -> None:
        self.log_file.flush()
        self.terminal.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def quiet_kfp(pipeline_root: Path):
    """Run kfp.local with its output filtered (QuietKfpOutput) and logged in full to <pipeline_root>/last-run.log."""
    log_path = pipeline_root / "last-run.log"
    with open(log_path, "w") as log_file, warnings.catch_warnings():
        # kfp.local warns at every task that our image is not a python image; locally the venv is the image.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
        original = sys.stdout
        sys.stdout = QuietKfpOutput(original, log_file)
        try:
            yield log_path
        finally:
            sys.stdout = original
            print(f"full pipeline log: {log_path}")


def _init_local(pipeline_root: Path) -> None:
    from kfp import local

    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root.resolve()))


def run_local(params_yaml: str, tracking_uri: str, pipeline_root: Path, source: str = "", input_path: str = "",
              milvus_uri: str = "") -> str:
    """Run every step as a subprocess in this environment; returns the promoted model version.
    Raises RuntimeError naming the failed task (its log, above, has the one-line reason)."""
    _init_local(pipeline_root)
    with quiet_kfp(pipeline_root):
        task = training_pipeline(params_yaml=params_yaml, source=source, input_path=input_path,
                                 tracking_uri=tracking_uri, milvus_uri=milvus_uri)
    return str(task.output)


def launchers():
    """This front-end's pipeline launchers, for mrl.retrain (the library does not import pipelines/)."""
    from mrl.retrain import Launchers

    return Launchers(run_local=run_local, submit=submit)


def run_video_local(params_yaml: str, tracking_uri: str, pipeline_root: Path, input_path: str = "",
                    milvus_uri: str = "") -> str:
    """The video pipeline on kfp.local; returns the promoted segments collection. Raises RuntimeError naming the
    failed task, as run_local."""
    _init_local(pipeline_root)
    with quiet_kfp(pipeline_root):
        task = video_pipelines.video_pipeline(params_yaml=params_yaml, input_path=input_path,
                                              tracking_uri=tracking_uri, milvus_uri=milvus_uri)
    return str(task.output)


def submit(host: str, params_yaml: str, tracking_uri: str = "", experiment: str = "mrl", source: str = "",
           input_path: str = "", milvus_uri: str = "", package: Path | None = None, video: bool = False) -> str:
    """Submit a compiled pipeline YAML (default: the training pipeline's, or with `video` the video pipeline's) to a
    KFP cluster; returns the run id."""

    arguments = {"params_yaml": params_yaml, "tracking_uri": tracking_uri, "input_path": input_path,
                 "milvus_uri": milvus_uri}
    if not video:
        arguments["source"] = source  # the video pipeline has no source: it reads videos
    package = package or (video_pipelines.COMPILED if video else COMPILED)
    run = kfp_client(host).create_run_from_pipeline_package(str(package), experiment_name=experiment,
                                                                 arguments=arguments)
    return run.run_id


def run_drift_local(params_yaml: str, current_path: str, pipeline_root: Path, tracking_uri: str = "",
                    milvus_uri: str = "", reference_path: str = "") -> bool:
    """The drift pipeline on kfp.local; returns whether drift was found (the retrain step ran if so)."""
    _init_local(pipeline_root)
    with quiet_kfp(pipeline_root):
        task = drift_pipelines.drift_pipeline(params_yaml=params_yaml, current_path=current_path,
                                              tracking_uri=tracking_uri, milvus_uri=milvus_uri,
                                              reference_path=reference_path)
    return bool(task.output)


def schedule_drift(host: str, params_yaml: str, cron: str, current_path: str = "", experiment: str = "mrl",
                   tracking_uri: str = "", milvus_uri: str = "", package: Path = drift_pipelines.COMPILED) -> str:
    """Create a KFP recurring run of the compiled drift pipeline (cron has six fields: seconds first)."""

    client = kfp_client(host)
    experiment_id = client.create_experiment(experiment).experiment_id
    arguments = {"params_yaml": params_yaml, "tracking_uri": tracking_uri, "milvus_uri": milvus_uri}
    if current_path:
        arguments["current_path"] = current_path
    job = client.create_recurring_run(experiment_id, "mrl-drift", cron_expression=cron, max_concurrency=1,
                                      pipeline_package_path=str(package), params=arguments, no_catchup=True)
    return job.recurring_run_id


def latest_local_output(pipeline_root: Path, task: str, output: str) -> Path | None:
    """Path of `output` written by `task` in the newest local run under `pipeline_root`."""
    runs = sorted(p for p in pipeline_root.glob("mrl-*") if p.is_dir() and (p / task).is_dir())
    candidate = runs[-1] / task / output if runs else None
    return candidate if candidate and candidate.exists() else None
