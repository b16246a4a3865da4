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
    from mrl.evaluate import evaluate, format_table
    from mrl.promote import save_catalogue
    from mrl.text.artifact import is_text_dataset
    from mrl.text.evaluate import evaluate_text, format_text_table

    cfg = parse_params(params_yaml, "params_yaml")
    if is_text_dataset(dataset.path):  # held-out queries against every document; adapter vs truncation and PCA
        text = evaluate_text(model.path, dataset.path, cfg.text.eval_k, cfg.evaluate.max_queries, per_dim.path,
                             plot.path, num_threads=cfg.train.num_threads)
        rows, shown, every = text.per_dim(), format_text_table(text), None
    else:
        result = evaluate(model.path, dataset.path, cfg.evaluate, per_dim.path, plot.path)
        rows, shown, every = result.per_dim, format_table(result.per_dim), result.embeddings
    embeddings.metadata["rows"] = save_catalogue(embeddings.path, every)
    for dim, row in rows.items():
        for name, value in row.items():
            metrics.log_metric(f"{name}_d{dim}", value)
    with open(table.path, "w") as f:
        f.write("```\n" + shown + "\n```\n")
