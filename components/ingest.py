from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def ingest_op(params_yaml: str, source: str, input_path: str, dataset: Output[Dataset]):
    """Raw data -> dataset artifact. Empty `source`/`input_path` fall back to params (ingest.*)."""
    from mrl.config import parse_params
    from mrl.ingest import ingest

    cfg = parse_params(params_yaml, "params_yaml", [f"ingest.source={source}"] if source else [])
    result = ingest(cfg.ingest.source, input_path or cfg.ingest.input, dataset.path, cfg.ingest, cfg.text)
    dataset.metadata.update({"kind": result.kind, "n_train": result.n_train, "n_test": result.n_test,
                             "classes": result.classes, "item_shape": list(result.item_shape)})
