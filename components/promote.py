from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def promote_op(params_yaml: str, tracking_uri: str, milvus_uri: str, version: str, dataset: Input[Dataset],
               promotion: Output[Artifact]):
    """Embed the catalogue with model `version`, choose the funnel, build and verify a new Milvus collection
    and swap the serving alias. Empty URIs: the pod's $MLFLOW_TRACKING_URI / $MILVUS_URI."""
    import json

    from mrl.config import parse_params
    from mrl.promote import promote_index

    cfg = parse_params(params_yaml, "params_yaml")
    r = promote_index(cfg, dataset.path, tracking_uri or None, milvus_uri or None, version)
    record = {"collection": r.collection, "previous": r.previous, "rows": r.rows, "funnel": r.funnel.row(),
              "verify_recall": r.verify_recall, "dropped": r.dropped}
    with open(promotion.path, "w") as f:
        json.dump(record, f, indent=2)
    promotion.metadata.update({"collection": r.collection, "funnel": r.funnel.funnel.name(),
                               "funnel_recall": r.funnel.recall, "verify_recall": r.verify_recall})
