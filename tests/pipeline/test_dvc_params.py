"""Every DVC stage declares what its command reads: the params keys under `params`, the mrl modules under `deps`.

`dvc repro` runs each stage's own command on tiny data, with an `mrl` on PATH that is the real command plus a record,
per stage ($DVC_STAGE), of the params keys it reads (mrl.config's MRL_PARAMS_READ_LOG) and of the mrl modules it
imports. A key outside the stage's `params` (a section covers its keys) or a module outside its `deps` fails the test.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from helpers import REPO, SMALL_PARAMS, dvc_project, small_params, write_fashion_mnist

ROOT_DVC = REPO / "dvc.yaml"
VIDEO_DVC = REPO / "pipelines" / "video-dvc" / "dvc.yaml"
# What every command runs to parse its flags and params: no stage lists these (see the comment atop dvc.yaml).
PLUMBING = {"mrl/__init__.py", "mrl/errors.py", "mrl/progress.py"}
PLUMBING_PACKAGES = ("mrl/cli/", "mrl/config/")  # the command groups, and the params schema


def _plumbing(module: str) -> bool:
    return module in PLUMBING or module.startswith(PLUMBING_PACKAGES)


def _code_free(module: str) -> bool:
    """A module that is only a docstring (mrl/video/__init__.py): nothing in it can change a result."""
    body = ast.parse((REPO / module).read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)

SHIM = '''#!{python}
"""`mrl` for a stage that `dvc repro` runs: the real command, recording what it reads under $MRL_PROBE_DIR."""
import atexit
import os
import sys
from urllib.parse import quote

log = os.path.join(os.environ["MRL_PROBE_DIR"], quote(os.environ["DVC_STAGE"], safe=""))
os.environ["MRL_PARAMS_READ_LOG"] = log + ".params"


def modules():
    root = os.path.dirname(os.path.dirname(sys.modules["mrl"].__file__))
    files = {{os.path.relpath(m.__file__, root) for name, m in list(sys.modules.items())
             if (name == "mrl" or name.startswith("mrl.")) and getattr(m, "__file__", None)}}
    with open(log + ".modules", "a") as f:
        f.write("".join(path + "\\n" for path in sorted(files)))


atexit.register(modules)
from mrl.cli import main  # noqa: E402

main()
'''

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _param(params: dict, dotted: str):
    value = params
    for key in dotted.split("."):
        assert isinstance(value, dict) and key in value, f"params key {dotted} is not in params.yaml"
        value = value[key]
    return value


def _render(text: str, params: dict) -> str:
    """DVC's ${section.key} templating, from params.yaml."""
    return re.sub(r"\$\{([\w.]+)\}", lambda m: str(_param(params, m.group(1))), text)


def _paths(entries: list) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def _stages(dvc_file: Path) -> dict[str, dict]:
    """Stages by their DVC address ($DVC_STAGE): `name` in ./dvc.yaml, `path/dvc.yaml:name` elsewhere."""
    spec = yaml.safe_load(dvc_file.read_text())["stages"]
    relative = dvc_file.relative_to(REPO).as_posix()
    return {(name if relative == "dvc.yaml" else f"{relative}:{name}"): stage for name, stage in spec.items()}


def _covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("dvc_file", [ROOT_DVC, VIDEO_DVC], ids=["dvc.yaml", "video-dvc"])
def test_every_dep_exists_and_every_params_key_is_in_params_yaml(dvc_file):
    """Static: a dep is an earlier stage's output, the raw input or a file or folder of the repository (never a stale
    artifact in this checkout); a params entry names a section or key of params.yaml."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    produced: set[str] = set()
    for name, stage in _stages(dvc_file).items():
        for dep in (_render(d, params) for d in stage["deps"]):
            assert (dep in produced or dep == params["ingest"]["input"]
                    or (not dep.startswith("artifacts/") and (REPO / dep).exists())), f"{name}: dep {dep} does not exist"
        for key in stage.get("params", []):
            _param(params, key)
        for out_list in ("outs", "metrics", "plots"):
            produced |= {_render(o, params) for o in _paths(stage.get(out_list, []))}


def _undeclared(probe: Path, stages: dict[str, dict]) -> list[str]:
    """What each stage's run read that its stage does not declare, one line each."""
    problems = []
    for address, stage in stages.items():
        modules_log = probe / f"{quote(address, safe='')}.modules"
        assert modules_log.exists(), f"{address}: `dvc repro` did not run this stage's command through the probe"
        params_log = probe / f"{quote(address, safe='')}.params"
        reads = set(params_log.read_text().split()) if params_log.exists() else set()
        declared = set(stage.get("params", []))
        for key in sorted(reads):
            if key not in declared and key.split(".")[0] not in declared:
                problems.append(f"{address}: reads params key {key}, not in its params")
        deps = [d for d in stage["deps"] if d.startswith("mrl")]
        for module in sorted(set(modules_log.read_text().split())):
            if not _plumbing(module) and not any(_covers(dep, module) for dep in deps) and not _code_free(module):
                problems.append(f"{address}: imports {module}, not in its deps")
    return problems


def _dvc(repo: Path, env: dict, *args: str) -> str:
    result = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A copy of the project in a fresh git repository where `dvc repro` has run the training pipeline through the
    probe, on 300 + 90 synthetic images; the drift files in their default, in-repository places."""
    tmp = tmp_path_factory.mktemp("dvc-params")
    # 90 test images: the drift stage's window is smaller than the reference's 100 rows, so it recalibrates (and reads
    # what that reads)
    raw = write_fashion_mnist(tmp / "raw", 300, 90)
    drift = SMALL_PARAMS["drift"] | {"reference_dir": "artifacts/drift/references",
                                     "workspace": "artifacts/drift/workspace"}
    repo, probe, shim_dir = tmp / "repo", tmp / "probe", tmp / "bin"
    for folder in (repo, probe, shim_dir):
        folder.mkdir()
    dvc_project(repo, small_params(raw, drift=drift), ("dvc.yaml", ".dvcignore", "mrl", "pipelines/video-dvc"))
    shim = shim_dir / "mrl"
    shim.write_text(SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    env = os.environ | {"PATH": f"{shim_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
                        "MRL_PROBE_DIR": str(probe), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
    for name in ("MRL_PARAMS_READ_LOG", "MILVUS_URI"):  # Milvus: the repository's ./milvus.db (Milvus Lite)
        env.pop(name, None)
    _dvc(repo, env, "repro")
    return {"tmp": tmp, "raw": raw, "drift": drift, "repo": repo, "probe": probe, "env": env}


@pytest.mark.slow
def test_training_stages_read_only_what_they_declare(probed):
    repo = probed["repo"]
    assert (repo / "artifacts/drift/references/items_v1.npz").is_file()  # promote's out
    assert any((repo / "artifacts/drift/workspace").iterdir())  # drift's out
    problems = _undeclared(probed["probe"], _stages(ROOT_DVC))
    assert not problems, "\n".join(problems)
    # The drift files are outputs: DVC tracks them, so the pipeline is up to date after its run.
    assert "up to date" in _dvc(repo, probed["env"], "status", "dvc.yaml")


@pytest.mark.slow
def test_video_stages_read_only_what_they_declare(probed):
    """The video pipeline on two generated videos, segmented and indexed with the champion the training run made."""
    from mrl.video.synth import generate_corpus

    tmp, repo = probed["tmp"], probed["repo"]
    videos = generate_corpus(tmp / "videos", 2, mean_video_s=8, fashion_mnist_dir=probed["raw"], seed=1,
                             continuous_share=0, scene_s=(2.0, 4.0), progress=False).parent
    (repo / "params.yaml").write_text(small_params(probed["raw"], ingest={"input": str(videos)}, drift=probed["drift"]))
    _dvc(repo, probed["env"], "repro", "pipelines/video-dvc/dvc.yaml")
    assert (repo / "artifacts/index/video_promotion.json").is_file()
    problems = _undeclared(probed["probe"], _stages(VIDEO_DVC))
    assert not problems, "\n".join(problems)


def test_the_recorder_logs_the_params_keys_read_and_only_those(tmp_path):
    """mrl.config's recorder: attribute reads of a loaded config are logged at exit. Not reads: a key the command line
    overrides, serializing the config, a config rebuilt from a checkpoint's copy."""
    log = tmp_path / "reads"
    code = ("from mrl.config import config_from_dict, load_config; cfg = load_config(None, ['train.epochs=2']); "
            "assert cfg.train.epochs == 2 and cfg.train.lr == 0.003 and cfg.drift.seed == 0; "
            "saved = cfg.model_dump(mode='json'); assert config_from_dict(saved).model.embedding_dim == 512")
    env = os.environ | {"MRL_PARAMS_READ_LOG": str(log)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path)
    assert log.read_text().split() == ["drift.seed", "train.lr"]
    env.pop("MRL_PARAMS_READ_LOG")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path)
    assert log.read_text().split() == ["drift.seed", "train.lr"]  # off: nothing more
