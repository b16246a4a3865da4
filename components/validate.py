from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def validate_op(params_yaml: str, dataset: Input[Dataset], result: Output[Artifact]):
    """Great Expectations gate: fails the run (before training) if any expectation fails."""
    from mrl.config import parse_params
    from mrl.validate import validate_dataset

    cfg = parse_params(params_yaml, "params_yaml")
    report = validate_dataset(dataset.path, cfg.validation, result.path, cfg.model)
    result.metadata.update({"success": report.success, "expectations": report.evaluated})
