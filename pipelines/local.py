"""kfp.local for this project: each step a subprocess here (or a container of the project image), its output
filtered to what a person reads, and the outputs of the newest run found again."""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from pathlib import Path


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


def init_local(pipeline_root: Path, runner: str = "subprocess", tracking_uri: str = "", milvus_uri: str = "",
                input_path: str = "") -> None:
    """kfp.local with each step a subprocess in this environment, or (docker) a container of the project image."""
    # Here, not at the top: inside a KFP step (the drift pipeline's retrain step imports pipelines.launch) kfp.dsl
    # has no `component` under _KFP_RUNTIME, and pipelines.containers imports the components.
    from kfp import local

    from pipelines.containers import docker_runner

    root = pipeline_root.resolve()
    if runner == "docker":
        kfp_runner = docker_runner(root, tracking_uri, milvus_uri, input_path)  # checks first, then makes root
    else:
        kfp_runner = local.SubprocessRunner(use_venv=False)
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=kfp_runner, pipeline_root=str(root))


def latest_local_output(pipeline_root: Path, task: str, output: str) -> Path | None:
    """Path of `output` written by `task` in the newest local run under `pipeline_root`."""
    runs = sorted(p for p in pipeline_root.glob("mrl-*") if p.is_dir() and (p / task).is_dir())
    candidate = runs[-1] / task / output if runs else None
    return candidate if candidate and candidate.exists() else None
