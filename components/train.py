from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def train_op(params_yaml: str, dataset: Input[Dataset], model: Output[Model]):
    """Train with MatryoshkaLoss; the checkpoint carries its config and nesting dims."""
    from mrl.config import parse_params
    from mrl.train import train

    cfg = parse_params(params_yaml, "params_yaml")
    result = train(cfg, dataset.path, model.path)
    model.metadata.update({"epochs": result.epochs, "final_loss": result.final_loss,
                           "nesting_dims": list(cfg.model.nesting_dims), "objective": cfg.loss.objective})
