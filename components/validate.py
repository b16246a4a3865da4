from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def validate_op(params_yaml: str, dataset: Input[Dataset], result: Output[Artifact]):
    """Great Expectations gate: fails the run (before training) if any expectation fails."""
    from mrl.config import parse_params
    from mrl.models.backbones import model_input_shape
    from mrl.validate import validate_dataset

    cfg = parse_params(params_yaml, "params_yaml")
    report = validate_dataset(dataset.path, cfg.validation, result.path,
                              model_input_shape(cfg.model.backbone, cfg.model.image_size))
    result.metadata.update({"success": report.success, "expectations": report.evaluated})
