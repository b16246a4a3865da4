from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def train_op(params_yaml: str, dataset: Input[Dataset], model: Output[Model]):
    """Train with MatryoshkaLoss (a text dataset: the text adapter on its query-document pairs); the checkpoint carries
    its config and nesting dims."""
    from mrl.config import parse_params
    from mrl.train import train_stage

    result = train_stage(parse_params(params_yaml, "params_yaml"), dataset.path, model.path)
    model.metadata.update({"epochs": result.epochs, "final_loss": result.final_loss, "objective": result.objective})
