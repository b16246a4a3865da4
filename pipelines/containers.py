"""kfp.local's DockerRunner for this project: every step in the project image (components/image.py), through a Docker
API (a Docker engine, or podman's `podman system service`), seeing the same files as the subprocess runner.

The working directory and the paths a run uses (the pipeline root, a sqlite MLflow store, a Milvus Lite file, the raw
input) are mounted at the same paths, and each step runs in the working directory, so relative paths in params mean
what they mean to the subprocess runner. Steps never run as root: as the owner of the working directory, or, when
root owns it, as the image's own user mrl (uid 10001), which must then be able to write the mounted paths.
Directories made for the steps (the pipeline root) belong to the steps' user."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from components.image import MRL_IMAGE
from mrl.errors import MRLError

IMAGE_USER = (10001, 10001)  # the Dockerfile's USER
# Where a Docker API answers when $DOCKER_HOST is unset: Docker's socket, podman's rootful and rootless ones.
SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock",
           f"{os.environ.get('XDG_RUNTIME_DIR', f'/run/user/{os.getuid()}')}/podman/podman.sock")


def docker_host() -> str:
    """$DOCKER_HOST, else the first Docker API socket present; a one-line error when none is."""
    if host := os.environ.get("DOCKER_HOST"):
        return host
    for socket in SOCKETS:
        if Path(socket).is_socket():
            return f"unix://{socket}"
    raise MRLError("--runner docker: no Docker API (DOCKER_HOST unset, no socket at "
                   f"{', '.join(SOCKETS[:2])}): start podman's with `make podman-socket`, or a Docker engine")


def check_image(host: str, image: str = MRL_IMAGE) -> None:
    """The engine at host answers and holds the image (kfp.local would try to pull it: no registry here)."""
    import docker

    try:
        with contextlib.closing(docker.DockerClient(base_url=host)) as client:
            client.images.get(image)
    except docker.errors.ImageNotFound:
        raise MRLError(f"--runner docker: image {image} is not in the engine at {host}: build it with `make image`"
                       ) from None
    except docker.errors.DockerException as e:
        raise MRLError(f"--runner docker: no Docker API answers at {host} ({e})") from None


def host_paths(tracking_uri: str, milvus_uri: str, input_path: str) -> tuple[list[Path], list[Path]]:
    """(read-write, read-only) paths a run uses besides the pipeline root: the working directory, the directories of a
    sqlite MLflow store and of a Milvus Lite file (their journals and locks sit beside them), and the raw input."""
    writable = [Path.cwd()]
    if tracking_uri.startswith("sqlite:///"):
        writable.append(Path(tracking_uri.removeprefix("sqlite:///")).parent)
    if milvus_uri and "://" not in milvus_uri:
        writable.append(Path(milvus_uri).resolve().parent)
    read_only = [Path(input_path).resolve()] if input_path and Path(input_path).exists() else []
    return writable, read_only


def step_user(workdir: Path) -> tuple[int, int]:
    """The uid and gid steps run as: the working directory's owner; the image's user mrl when that is root."""
    info = workdir.stat()
    return IMAGE_USER if info.st_uid == 0 else (info.st_uid, info.st_gid)


def make_dirs_for(path: Path, uid: int, gid: int) -> None:
    """mkdir -p, the directories made belonging to the steps' user (root running the CLI would own them otherwise)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for made in missing:
            os.chown(made, uid, gid)


def check_writable(paths: list[Path], uid: int) -> None:
    for path in paths:
        info = path.stat()
        if info.st_uid != uid and not info.st_mode & stat.S_IWOTH:
            raise MRLError(f"--runner docker: steps run as uid {uid}, which cannot write {path} (owned by uid "
                           f"{info.st_uid}); run from a directory you own as a non-root user, or `chown -R {uid}` it")


def _outermost(paths: list[Path]) -> list[Path]:
    """Each path once, leaving out those inside another (mounting both would hide nothing, but is noise)."""
    unique = sorted(set(paths), key=lambda p: (len(p.parts), p))
    return [p for i, p in enumerate(unique) if not any(p.is_relative_to(q) for q in unique[:i])]


def run_step_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """kfp.local's run_docker_container, less its auto_remove: the engine may remove a fast-failing container before
    wait() reads its exit code, and kfp 2.17 then returns 0, so a failed step counts as a success and the pipeline
    goes on to train and promote (kubeflow/pipelines#13332; seen here with podman: a refused validation went on).
    The container is removed once its exit code is read."""
    import docker

    container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                      volumes=volumes, **run_args)
    print(f"step container {container.short_id} of {image}")
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return container.wait()["StatusCode"]
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


def docker_runner(pipeline_root: Path, tracking_uri: str, milvus_uri: str, input_path: str):
    """A kfp.local DockerRunner that runs each step in the project image as described above."""
    import docker
    from kfp import local
    from kfp.local import docker_task_handler

    docker_task_handler.run_docker_container = run_step_container  # until kfp has the fix (see run_step_container)
    os.environ["DOCKER_HOST"] = host = docker_host()  # kfp.local's task handler calls docker.from_env()
    check_image(host)
    writable, read_only = host_paths(tracking_uri, milvus_uri, input_path)
    uid, gid = step_user(Path.cwd())
    check_writable(writable, uid)
    make_dirs_for(pipeline_root, uid, gid)
    check_writable([pipeline_root], uid)
    writable = _outermost(writable)
    # kfp.local mounts the pipeline root itself (and refuses a second mount of it).
    mounts = [docker.types.Mount(str(p), str(p), type="bind") for p in writable if p != pipeline_root]
    mounts += [docker.types.Mount(str(p), str(p), type="bind", read_only=True)
               for p in _outermost(read_only) if not any(p.is_relative_to(w) for w in writable)]
    return local.DockerRunner(
        mounts=mounts, working_dir=str(Path.cwd()), user=f"{uid}:{gid}",
        # Host networking: an MLflow or Milvus server on localhost is reachable as from the subprocess runner.
        network_mode="host",
        # HOME: any uid may run the steps; PYTHONSAFEPATH: the image's mrl, never a checkout in the working directory.
        environment={"HOME": "/tmp", "PYTHONSAFEPATH": "1"})
