from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def register_op(params_yaml: str, tracking_uri: str, model: Input[Model], per_dim: Input[Artifact],
                plot: Input[Artifact], decision: Output[Artifact]) -> str:
    """Log to MLflow, register a version and gate it; aliases move only if the gate passes.
    Empty `tracking_uri`: $MLFLOW_TRACKING_URI of the pod. Returns the promoted version."""
    import json

    from mrl.config import parse_params
    from mrl.registry import register_and_promote

    cfg = parse_params(params_yaml, "params_yaml").registry
    registration, gate = register_and_promote(model.path, per_dim.path, plot.path, cfg, tracking_uri or None)
    with open(decision.path, "w") as f:
        json.dump({"registration": vars(registration), "gate": gate.to_dict()}, f, indent=2)
    decision.metadata.update({"model_name": registration.model_name, "version": registration.version,
                              "run_id": registration.run_id})
    return registration.version
