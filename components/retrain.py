"""The drift pipeline's retrain step: start drift.on_drift with the drift check's summary.

A module of its own: its body launches the training pipeline (pipelines/launch.py), which is made of the other
components, so it must not sit in a module the training pipeline imports."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def retrain_op(params_yaml: str, tracking_uri: str, milvus_uri: str, summary: Input[Artifact]
               ) -> NamedTuple("Started", [("what", str)]):
    """Start drift.on_drift (none: only say so), as `mrl drift` does, with the check's summary as the payload. Tokens
    come from the pod's environment (Kubernetes Secrets)."""
    import json
    from collections import namedtuple

    from mrl.config import parse_params
    from mrl.retrain import on_drift
    from pipelines.launch import launchers

    with open(summary.path) as f:
        checked = json.load(f)
    what = on_drift(parse_params(params_yaml, "params_yaml"), checked, tracking_uri, milvus_uri, launchers())
    print(what)
    return namedtuple("Started", ["what"])(what)
