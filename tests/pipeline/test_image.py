"""The Dockerfile, checked statically in `make test` (the container tier, tests/container, builds and runs it)."""

import fnmatch
import re
import tomllib

import pytest
from helpers import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    return [(line.split()[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


STEPS = instructions(DOCKERFILE)
FINAL = STEPS[max(i for i, (op, _) in enumerate(STEPS) if op == "FROM"):]


def arg_default(name: str) -> str:
    values = [args.split("=", 1)[1] for op, args in STEPS if op == "ARG" and args.startswith(f"{name}=")]
    assert values, f"ARG {name} with a default is missing"
    return values[0]


def test_image_is_multi_stage_non_root_with_mrl_installed():
    stages = [args for op, args in STEPS if op == "FROM"]
    assert len(stages) >= 2 and any(s.endswith("AS build") for s in stages) and " AS " not in stages[-1]
    users = [args for op, args in FINAL if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage must run as a non-root user"
    # Numeric, or Kubernetes' runAsNonRoot cannot verify it; k8s/ sets runAsUser 10001 to match.
    assert users[-1].split(":")[0] == "10001"
    assert any(op == "RUN" and "--uid 10001" in args for op, args in FINAL)
    assert any(op == "RUN" and "pip install" in args and " . " in f"{args} " for op, args in STEPS)
    assert any(op == "COPY" and "--from=build /opt/venv" in args for op, args in FINAL)


def test_components_use_what_the_image_contains():
    for package in ("mrl", "components", "pipelines"):
        assert re.search(rf"^COPY {package} ", DOCKERFILE, re.M), f"the image must contain {package}/"


def test_cpu_torch_by_default_and_a_cuda_base_by_build_argument():
    assert arg_default("TORCH_INDEX") == "https://download.pytorch.org/whl/cpu"
    assert any(op == "RUN" and '--extra-index-url "${TORCH_INDEX}"' in args for op, args in STEPS)
    # Every stage derives from BASE_IMAGE (directly or through another stage), so the argument switches all.
    names = {"${BASE_IMAGE}"}
    for op, args in STEPS:
        if op == "FROM":
            image, *alias = args.split(" AS ")
            assert image.strip() in names, f"FROM {args}: not BASE_IMAGE or a stage built from it"
            names.update(a.strip() for a in alias)
    # The documented CUDA build (header comment) passes both arguments.
    assert re.search(r"BASE_IMAGE=nvidia/cuda:12\.\S*-runtime-ubuntu22\.04", DOCKERFILE)
    assert re.search(r"TORCH_INDEX=https://download\.pytorch\.org/whl/cu12\d", DOCKERFILE)


def test_image_python_matches_pyproject():
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    version = re.search(r">=\s*(3\.\d+)", requires).group(1)
    assert arg_default("BASE_IMAGE").startswith(f"python:{version}-")
    assert any(op == "RUN" and f"python{version} -m venv /opt/venv" in args for op, args in STEPS)


def test_image_runs_kfp_steps_and_the_mlflow_server_as_non_root():
    run = " ".join(args for op, args in FINAL if op == "RUN")
    # The KFP v2 launcher stages artifacts in /gcs, /minio, /s3, which a non-root user cannot create.
    for path in ("/gcs", "/minio", "/s3"):
        assert re.search(rf"mkdir -p[^&]*{path}\b", run) and re.search(rf"chown mrl:mrl[^&]*{path}\b", run)
    # k8s/base/mlflow.yaml runs `mlflow server` from this image against Postgres and S3.
    install = " ".join(args for op, args in STEPS if op == "RUN" and "pip install" in args)
    assert "psycopg2" in install and "boto3" in install


def test_dockerignore_keeps_what_the_build_copies():
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    sources = [args.split()[:-1] for op, args in STEPS if op == "COPY" and not args.startswith("--")]
    assert sources
    for path in (s for group in sources for s in group):
        assert (REPO / path).exists(), f"COPY {path}: not in the repository"
        excluded = [p for p in patterns if fnmatch.fnmatch(path, p.rstrip("/"))]
        assert not excluded, f".dockerignore {excluded} excludes {path}, which the Dockerfile copies"


@pytest.mark.slow  # builds the wheel with pip
def test_the_installed_package_carries_the_compiled_pipelines_and_the_search_page(tmp_path):
    """The image installs with `pip install .` (not editable): files other than Python must be package data."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"  # what the Dockerfile copies, built outside the checkout (setuptools writes build/)
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in ("mrl", "components", "pipelines"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("mrl-*.whl"))).namelist())
    compiled = {f"pipelines/{p.name}" for p in (REPO / "pipelines").glob("*.yaml")}
    assert compiled and compiled <= names, compiled - names
    assert "mrl/web/index.html" in names


def test_ca_bundle_reaches_pip_as_a_build_secret_only():
    """scripts/build-image.sh passes the host's CA bundle as the secret `ca-bundle`: mounted for the step that
    downloads, never copied into a layer."""
    downloads = [args for op, args in STEPS if op == "RUN" and "pip install" in args and "--no-deps" not in args]
    assert downloads and all(args.startswith("--mount=type=secret,id=ca-bundle") for args in downloads)
    assert all("PIP_CERT=/run/secrets/ca-bundle" in args for args in downloads)
    assert not any(op in ("COPY", "ADD") and "cert" in args.lower() for op, args in STEPS)
    # The code's own layer needs no network (and so no trust): setuptools came with the dependencies.
    assert any(op == "RUN" and "pip install --no-deps --no-build-isolation ." in args for op, args in STEPS)
    assert "id=ca-bundle,src=" in (REPO / "scripts" / "build-image.sh").read_text()
