"""The Dockerfile, checked statically (no Docker engine on the build machines)."""

import re

from helpers import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    return [(line.split()[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_image_is_multi_stage_non_root_with_mrl_installed():
    steps = instructions(DOCKERFILE)
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build")
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the final stage must run as a non-root user"
    assert any(op == "RUN" and "pip install" in args and " ." in args for op, args in steps)
    assert any(op == "COPY" and "--from=build /opt/venv" in args for op, args in final)


def test_components_use_what_the_image_contains():
    for package in ("mrl", "components", "pipelines"):
        assert re.search(rf"^COPY {package} ", DOCKERFILE, re.M), f"the image must contain {package}/"
