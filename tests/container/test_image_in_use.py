"""The container tier (`make test-container`, `pytest -m container`): the project image built without a registry
(scripts/build-image.sh, podman or a Docker engine), then used as its users use it: the training pipeline with every
step in a container (kfp.local's DockerRunner), the search service and the drift CronJob's command run from it."""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import numpy as np
import pytest
from helpers import REPO, SMALL_PARAMS, small_params, synthetic_images, write_fashion_mnist
from PIL import Image

from components.image import MRL_IMAGE
from mrl.drift.results import EXIT_DRIFT
from mrl.registry import aliases
from mrl.retrieval import milvus_index as mi
from pipelines.containers import IMAGE_USER, docker_host

pytestmark = [pytest.mark.slow, pytest.mark.container]
PORT = 18731


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The image, built or reused from the build cache, and a Docker API client: podman's on a socket of this test's
    own when podman builds (scripts/container-env.sh: podman where installed, unless CONTAINER_ENGINE says docker),
    else the Docker engine's."""
    build = subprocess.run(["bash", "scripts/build-image.sh"], cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    socket = None
    engine_name = os.environ.get("CONTAINER_ENGINE") or ("podman" if shutil.which("podman") else "docker")
    if engine_name == "podman" and not os.environ.get("DOCKER_HOST"):
        socket = tmp_path_factory.mktemp("podman") / "podman.sock"
        started = subprocess.run(["bash", "scripts/podman-socket.sh", str(socket)], cwd=REPO, capture_output=True,
                                 text=True, timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        os.environ["DOCKER_HOST"] = f"unix://{socket}"
    client = docker.DockerClient(base_url=docker_host())
    yield client
    client.close()
    if socket:
        subprocess.run(["pkill", "-f", f"podman system service --time=0 unix://{socket}"], check=False)
        del os.environ["DOCKER_HOST"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project directory with tiny Fashion-MNIST-format data and params, the image's user's when root runs this."""
    work = tmp_path_factory.mktemp("project")
    raw = write_fashion_mnist(work / "raw", 300, 100)
    (work / "params.yaml").write_text(small_params(raw, retrieval=SMALL_PARAMS["retrieval"] | {"shards": 2}))
    return as_image_user(work)


def as_image_user(directory: Path) -> Path:
    """As root, give the directory to the image's user mrl (as a person's project is theirs), so steps run as mrl."""
    if os.geteuid() == 0:
        for path in (directory, *directory.rglob("*")):
            os.chown(path, *IMAGE_USER)
    return directory


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MILVUS_URI")}
    return env


def _run_in_image(client, project: Path, command: list[str], **kwargs):
    """A container of the image with the project mounted at its own path and run there, as the project's owner."""
    owner = project.stat()
    return client.containers.run(
        MRL_IMAGE, command, mounts=[docker.types.Mount(str(project), str(project), type="bind")],
        working_dir=str(project), user=f"{owner.st_uid}:{owner.st_gid}", network_mode="host",
        environment={"HOME": "/tmp"}, **kwargs)


@pytest.fixture(scope="module")
def pipeline_run(engine, project):
    """`mrl pipeline run --runner docker` in the project, on its defaults (./mlflow.db, ./milvus.db, artifacts/kfp)."""
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).with_name("mrl")), "pipeline", "run", "--runner", "docker"],
                          cwd=project, env=_environment(), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    print(f"pipeline in containers: {time.monotonic() - started:.0f} s")
    return done


def test_pipeline_runs_every_step_in_the_image(pipeline_run, project):
    out = pipeline_run.stdout
    for line in ("  fashion-mnist-mrl@champion: v1", "\nindex: alias items -> items_v1, funnel ",
                 "\ndrift check: held-out split vs the reference of items_v1"):
        assert line in out, out[-3000:]
    log = (project / "artifacts/kfp/last-run.log").read_text()
    # Each task's container is named with the image it runs (pipelines/containers.py).
    executed = log.count("Executing task")
    assert executed >= 9 and log.count("step container ") == executed, log[-2000:]
    assert log.count(f" of {MRL_IMAGE}\n") == executed
    # What the steps wrote belongs to the project's owner (the image's user mrl, when root runs the tests): the steps
    # ran in containers as that user, not as this process.
    owner = project.stat().st_uid
    for written in (project / "mlflow.db", project / "milvus.db", project / "artifacts/kfp"):
        assert written.stat().st_uid == owner, written
    assert aliases("fashion-mnist-mrl", f"sqlite:///{project / 'mlflow.db'}") == {"champion": "1", "challenger": "1"}


def test_a_step_failing_in_its_container_stops_the_pipeline(engine, tmp_path):
    """A step's exit code crosses the container boundary: the validate step refuses the data, nothing trains."""
    raw = write_fashion_mnist(tmp_path / "raw", 300, 100)
    (tmp_path / "params.yaml").write_text(small_params(raw, validation={"min_train_items": 100_000}))
    as_image_user(tmp_path)
    done = subprocess.run([str(Path(sys.executable).with_name("mrl")), "pipeline", "run", "--runner", "docker"],
                          cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=900)
    errors = [line for line in done.stderr.splitlines() + done.stdout.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert errors[0].startswith("error: pipeline failed: ") and "validate-op" in errors[0]
    assert "expectations failed: splits" in done.stdout  # the step's own one-line reason, from its container
    assert not list(tmp_path.glob("artifacts/kfp/*/train-op"))


def _search(body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/search", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_search_service_runs_from_the_image(engine, pipeline_run, project):
    """`mrl serve` in a container, on the index and model the pipeline made: /readyz answers, a search finds."""
    container = _run_in_image(engine, project, ["mrl", "serve", "--port", str(PORT)], detach=True)
    try:
        ready = None
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=2) as response:
                    ready = json.load(response)
                    break
            except (urllib.error.URLError, OSError):
                container.reload()
                assert container.status in ("created", "running"), container.logs()[-2000:].decode()
                time.sleep(0.5)
        assert ready is not None and ready["status"] == "ready", container.logs()[-2000:].decode()
        assert ready["collection"] == "items_v1"
        buffer = io.BytesIO()
        Image.fromarray(synthetic_images(1, 5)[0][0]).save(buffer, format="PNG")
        by_image = _search({"image": base64.b64encode(buffer.getvalue()).decode(), "k": 5})
        assert len(by_image["results"]) == 5 and by_image["collection"] == "items_v1"
        first = by_image["results"][0]["id"]
        assert _search({"id": first, "k": 5})["results"][0]["id"] == first  # an item is its own nearest neighbour
    finally:
        container.stop(timeout=10)
        container.remove()


def test_drift_cronjob_command_runs_from_the_image(engine, pipeline_run, project):
    """k8s/base/drift.yaml's command (`mrl drift --params ... --current ... --out ...`) in a container, on a window
    unlike the index: it reports drift (exit 3) and writes the report where the CronJob's volume would keep it."""
    window = project / "window.npy"
    np.save(window, np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32) + 3.0)
    os.chown(window, project.stat().st_uid, project.stat().st_gid)
    container = _run_in_image(engine, project, ["mrl", "drift", "--params", "params.yaml", "--current", str(window),
                                                "--out", "drift"], detach=True)
    try:
        status = container.wait(timeout=600)["StatusCode"]
        logs = container.logs().decode()
    finally:
        container.remove()
    assert status == EXIT_DRIFT, logs[-2000:]
    assert (project / "drift" / "report.html").is_file() and "DRIFT" in logs


def test_promoted_index_is_readable_here(pipeline_run, project):
    """Last (Milvus Lite's file lock stays with a process once it opens the file): the index the containers wrote."""
    client = mi.connect(str(project / "milvus.db"))
    assert mi.alias_target(client, "items") == "items_v1"
    assert client.get_collection_stats("items_v1")["row_count"] == 400
    client.close()
