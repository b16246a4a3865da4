"""Run the training or video pipeline: locally with kfp.local (default) or on a Kubeflow Pipelines cluster."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

# The compiled pipelines. The pipeline modules themselves are imported only where a pipeline runs locally: they
# import kfp.compiler, which cannot load inside a KFP step (`_KFP_RUNTIME`), and the drift pipeline's retrain step
# imports this module for `launchers`.
TRAINING_YAML, VIDEO_YAML, DRIFT_YAML = (Path(__file__).with_name(f"{n}.yaml") for n in ("training", "video", "drift"))


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
        # ...and that CPU and memory requests (for clusters) do nothing locally.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local")
        original = sys.stdout
        sys.stdout = QuietKfpOutput(original, log_file)
        try:
            yield log_path
        finally:
            sys.stdout = original
            print(f"full pipeline log: {log_path}")


def _init_local(pipeline_root: Path, runner: str = "subprocess", tracking_uri: str = "", milvus_uri: str = "",
                input_path: str = "") -> None:
    """kfp.local with each step a subprocess in this environment, or (docker) a container of the project image."""
    from kfp import local

    root = pipeline_root.resolve()
    if runner == "docker":
        from pipelines.containers import docker_runner

        kfp_runner = docker_runner(root, tracking_uri, milvus_uri, input_path)  # checks first, then makes root
    else:
        kfp_runner = local.SubprocessRunner(use_venv=False)
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=kfp_runner, pipeline_root=str(root))


def run_local(params_yaml: str, tracking_uri: str, pipeline_root: Path, source: str = "", input_path: str = "",
              milvus_uri: str = "", runner: str = "subprocess") -> str:
    """Run every step on kfp.local (runner: a subprocess here, or a container of the project image); returns the
    promoted model version. Raises RuntimeError naming the failed task (its log, above, has the one-line reason)."""
    from pipelines.training import training_pipeline

    _init_local(pipeline_root, runner, tracking_uri, milvus_uri, input_path)
    with quiet_kfp(pipeline_root):
        task = training_pipeline(params_yaml=params_yaml, source=source, input_path=input_path,
                                 tracking_uri=tracking_uri, milvus_uri=milvus_uri)
    return str(task.output)


def launchers():
    """This front-end's pipeline launchers, for mrl.retrain (the library does not import pipelines/)."""
    from mrl.retrain import Launchers

    return Launchers(run_local=run_local, submit=submit)


def run_video_local(params_yaml: str, tracking_uri: str, pipeline_root: Path, input_path: str = "",
                    milvus_uri: str = "", runner: str = "subprocess") -> str:
    """The video pipeline on kfp.local; returns the promoted segments collection. Raises RuntimeError naming the
    failed task, as run_local."""
    from pipelines import video as video_pipelines

    _init_local(pipeline_root, runner, tracking_uri, milvus_uri, input_path)
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
    package = package or (VIDEO_YAML if video else TRAINING_YAML)
    run = kfp_client(host).create_run_from_pipeline_package(str(package), experiment_name=experiment,
                                                                 arguments=arguments)
    return run.run_id


def run_drift_local(params_yaml: str, current_path: str, pipeline_root: Path, tracking_uri: str = "",
                    milvus_uri: str = "", reference_path: str = "", runner: str = "subprocess") -> bool:
    """The drift pipeline on kfp.local; returns whether drift was found (the retrain step ran if so)."""
    from pipelines import drift as drift_pipelines

    _init_local(pipeline_root, runner, tracking_uri, milvus_uri, current_path)
    with quiet_kfp(pipeline_root):
        task = drift_pipelines.drift_pipeline(params_yaml=params_yaml, current_path=current_path,
                                              tracking_uri=tracking_uri, milvus_uri=milvus_uri,
                                              reference_path=reference_path)
    return bool(task.output)


def schedule_drift(host: str, params_yaml: str, cron: str, current_path: str = "", experiment: str = "mrl",
                   tracking_uri: str = "", milvus_uri: str = "", package: Path = DRIFT_YAML) -> str:
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


# ---------------------------------------------------------------- what `mrl pipeline run` prints at the end

def print_video_summary(cfg, milvus_uri: str, pipeline_root: Path, echo: Callable[[str], None] = print) -> None:
    """The promotion, an example search (a segment's own embedding as the query) and how to search."""
    from mrl.video.search import open_video_index

    record = json.loads(latest_local_output(pipeline_root, "promote-segments-op", "promotion").read_text())
    echo(f"\nvideo index: alias {cfg.video.collection_prefix} -> {record['collection']} (previous: "
               f"{record['previous'] or 'none'}): {record['segments']:,} segments, {record['frames']:,} frames, "
               f"funnel {record['funnel']}, verified recall@{cfg.retrieval.k} {record['verify_recall']:.4f}")
    index = open_video_index(cfg, milvus_uri, one_shot=True)  # one search: ask Milvus, load nothing in memory
    segment = next(iter(index.spans))
    hits, timings = index.search(index.vector_of(segment), 5)
    echo(f"example search, the moments nearest segment {segment}:")
    for h in hits:
        span = f"{h['start_s']:.1f}-{h['end_s']:.1f}s"
        echo(f"  {h['video_id']:<24} {span:<14} best {h['best_s']:.1f}s  {h['score']:.4f}")
    echo("  " + ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in timings.items()))
    index.client.close()
    echo(f"\nsearch the videos: mrl search --videos --image FRAME.png --milvus-uri {milvus_uri}   "
               "(or --clip CLIP.mp4)")
    echo(f"search service:    mrl serve --milvus-uri {milvus_uri}   (search page http://127.0.0.1:8000/, API /docs)")
    echo(f"pipeline outputs:  {pipeline_root}/")


def print_training_summary(cfg, tracking_uri: str, milvus_uri: str, pipeline_root: Path,
                           echo: Callable[[str], None] = print) -> None:
    """What a user looks at after a run: the per-dim table, aliases, an example search, where to go next."""
    from mrl.evaluate import format_table
    from mrl.registry import aliases
    from mrl.retrieval.serving import open_served_index

    per_dim = latest_local_output(pipeline_root, "evaluate-op", "per_dim")
    if per_dim:
        rows = {int(m): row for m, row in json.loads(per_dim.read_text()).items()}
        echo("\nper-dim evaluation (test queries vs train database):\n" + format_table(rows))
    echo("\nregistry:")
    for alias, v in aliases(cfg.registry.model_name, tracking_uri).items():
        echo(f"  {cfg.registry.model_name}@{alias}: {'v' + v if v else '(none)'}")
    index = open_served_index(cfg.retrieval, milvus_uri, one_shot=True)  # one search: load nothing in memory
    first_id = index.sample_id()
    hits, timings = index.search(index.vector_of(first_id)[None, :], 5)
    echo(f"\nindex: alias {cfg.retrieval.collection_prefix} -> {index.name}, funnel {index.info.funnel.name()}")
    echo(f"example search, the 5 nearest items to {first_id}:")
    for hit in hits[0]:
        echo(f"  {hit['id']:<28} {hit['score']:.4f}  {hit['label']}")
    echo("  " + ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in timings.items()))
    index.client.close()
    print_drift_check(cfg, pipeline_root, echo)
    if tracking_uri.startswith("sqlite:"):
        echo(f"\nMLflow UI:      mlflow ui --backend-store-uri {tracking_uri}   "
                   "(http://127.0.0.1:5000/#/experiments?workflowType=machine_learning)")
    echo(f"search service: mrl serve --milvus-uri {milvus_uri}   (search page http://127.0.0.1:8000/, API /docs)")
    echo(f"pipeline outputs: {pipeline_root}/")


def print_drift_check(cfg, pipeline_root: Path, echo: Callable[[str], None] = print) -> None:
    import shutil

    from mrl.drift import DriftResult, TestResult, format_result

    summary, report = (latest_local_output(pipeline_root, "dataset-drift-op", name) for name in ("summary", "report"))
    if not (summary and report):
        return
    d = json.loads(summary.read_text())
    result = DriftResult(**(d | {"tests": [TestResult(**t) for t in d["tests"]]}))
    html = Path(cfg.drift.reference_dir).parent / "last-check.html"  # the artifact has no .html suffix
    shutil.copyfile(report, html)
    echo(f"\ndrift check: held-out split vs the reference of {result.reference_meta.get('collection')}\n"
               + format_result(result))
    echo(f"drift report:   {html}\ndrift history:  evidently ui --workspace {cfg.drift.workspace} --port 8001")
