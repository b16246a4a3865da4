"""How `--runner docker` sets up its containers (pipelines/containers.py), without an engine; the container tier
(tests/container) runs them for real."""

import os
from pathlib import Path

import pytest
from helpers import invoke, one_line_error

from mrl.errors import MRLError
from pipelines import containers


def test_paths_a_run_writes_and_reads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    writable, read_only = containers.host_paths(f"sqlite:///{tmp_path}/stores/mlflow.db", "other/milvus.db", "raw")
    assert writable == [tmp_path, tmp_path / "stores", tmp_path / "other"]
    assert read_only == [tmp_path / "raw"]
    # A server URI is no path to mount, and an input that does not exist is not mounted (ingest names it, in its step).
    assert containers.host_paths("http://mlflow:5000", "http://milvus:19530", "missing") == ([tmp_path], [])


def test_nested_paths_are_mounted_once():
    paths = [Path("/a/b/c"), Path("/a"), Path("/d"), Path("/a/b"), Path("/a")]
    assert containers._outermost(paths) == [Path("/a"), Path("/d")]


def test_steps_run_as_the_owner_of_the_working_directory_never_root(tmp_path):
    info = tmp_path.stat()
    expected = containers.IMAGE_USER if info.st_uid == 0 else (info.st_uid, info.st_gid)
    assert containers.step_user(tmp_path) == expected
    assert containers.step_user(Path("/")) == containers.IMAGE_USER  # root's: the image's user mrl


def test_a_path_the_step_user_cannot_write_is_a_one_line_error(tmp_path):
    owner = tmp_path.stat().st_uid
    containers.check_writable([tmp_path], owner)
    tmp_path.chmod(0o755)
    with pytest.raises(MRLError, match=rf"steps run as uid {owner + 1}, which cannot write {tmp_path} "):
        containers.check_writable([tmp_path], owner + 1)
    tmp_path.chmod(0o777)  # world-writable: anyone may
    containers.check_writable([tmp_path], owner + 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving directories to another user needs root")
def test_directories_made_for_the_steps_belong_to_their_user(tmp_path):
    (tmp_path / "kept").mkdir()
    containers.make_dirs_for(tmp_path / "kept" / "a" / "b", 10001, 10001)
    assert (tmp_path / "kept").stat().st_uid == 0  # there before: left as it was
    assert [(tmp_path / p).stat().st_uid for p in ("kept/a", "kept/a/b")] == [10001, 10001]


def test_docker_host_from_the_environment_else_a_socket(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert containers.docker_host() == "tcp://127.0.0.1:2375"
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setattr(containers, "SOCKETS", (str(tmp_path / "docker.sock"),))
    with pytest.raises(MRLError, match="no Docker API .* `make podman-socket`"):
        containers.docker_host()


def test_runner_docker_without_an_api_or_image_stops_before_any_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(containers, "SOCKETS", (str(tmp_path / "docker.sock"),))
    params = Path(__file__).parents[2] / "params.yaml"
    result = invoke("pipeline", "run", "--runner", "docker", "--params", params)
    one_line_error(result, "--runner docker: no Docker API")
    assert not (tmp_path / "artifacts").exists()
    # An API that does not answer: named, with the reason.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    result = invoke("pipeline", "run", "--runner", "docker", "--params", params)
    one_line_error(result, f"--runner docker: no Docker API answers at unix://{tmp_path}/nothing.sock")
