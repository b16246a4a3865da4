from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import MRL_IMAGE


@dsl.component(base_image=MRL_IMAGE, install_kfp_package=False)
def evaluate_op(params_yaml: str, model: Input[Model], dataset: Input[Dataset], metrics: Output[Metrics],
                per_dim: Output[Artifact], plot: Output[Artifact], table: Output[Markdown],
                embeddings: Output[Artifact]):
    """Every nesting dim: per-dim KFP Metrics (e.g. knn_top1_d16), the JSON, the plot and a table; `embeddings`:
    every item's embedding (.npy, dataset order), which index promotion reuses (none for a text dataset)."""
    from mrl.config import parse_params
    from mrl.evaluate import evaluate_stage
    from mrl.promote import save_catalogue

    result = evaluate_stage(model.path, dataset.path, parse_params(params_yaml, "params_yaml"), per_dim.path, plot.path)
    embeddings.metadata["rows"] = save_catalogue(embeddings.path, result.embeddings)
    for dim, row in result.per_dim.items():
        for name, value in row.items():
            metrics.log_metric(f"{name}_d{dim}", value)
    with open(table.path, "w") as f:
        f.write("```\n" + result.table + "\n```\n")
