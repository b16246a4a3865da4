"""Training pipeline: ingest -> validate -> train -> evaluate -> register and gate -> promote the index ->
check a held-out window for drift against the new reference."""

from pathlib import Path

from kfp import compiler, dsl

# The component modules, not the `components` package: it also holds the drift pipeline's retrain step, which
# launches this pipeline.
from components.drift import dataset_drift_op
from components.evaluate import evaluate_op
from components.ingest import ingest_op
from components.promote import finish_promotion_op, insert_shard_op, plan_promotion_op, shard_list_op
from components.register import register_op
from components.train import train_op
from components.validate import validate_op
from mrl.config import ClusterConfig
from pipelines.cluster import DEFAULT_CLUSTER, on_cluster, training_resources

COMPILED = Path(__file__).with_suffix(".yaml")


def build(cluster: ClusterConfig = DEFAULT_CLUSTER):
    """The pipeline, with `cluster`'s Kubernetes wiring compiled in."""

    @dsl.pipeline(name="mrl-training",
                  description="Train, measure and register a Matryoshka embedding model, then promote its Milvus "
                              "index and check a held-out window for drift.")
    def training_pipeline(params_yaml: str = "", source: str = "", input_path: str = "", tracking_uri: str = "",
                          milvus_uri: str = "", drift_split: str = "test") -> str:
        ingest = on_cluster(ingest_op(params_yaml=params_yaml, source=source, input_path=input_path), cluster)
        validate = on_cluster(validate_op(params_yaml=params_yaml, dataset=ingest.outputs["dataset"]), cluster)
        train = train_op(params_yaml=params_yaml, dataset=ingest.outputs["dataset"]).after(validate)
        training_resources(on_cluster(train, cluster), cluster)
        evaluate = on_cluster(evaluate_op(params_yaml=params_yaml, model=train.outputs["model"],
                                          dataset=ingest.outputs["dataset"]), cluster)
        register = on_cluster(register_op(params_yaml=params_yaml, tracking_uri=tracking_uri,
                                          model=train.outputs["model"], per_dim=evaluate.outputs["per_dim"],
                                          plot=evaluate.outputs["plot"]), cluster)
        # Promotion: plan, then embed and insert retrieval.shards shards in parallel, then verify and swap.
        plan = on_cluster(plan_promotion_op(params_yaml=params_yaml, tracking_uri=tracking_uri, milvus_uri=milvus_uri,
                                            version=register.outputs["Output"], dataset=ingest.outputs["dataset"],
                                            evaluated=evaluate.outputs["embeddings"]),
                          cluster)
        # The plan's catalogue embeddings travel to the insert and finish steps: the catalogue is embedded once.
        shards = on_cluster(shard_list_op(params_yaml=params_yaml, plan=plan.outputs["Output"]), cluster)
        with dsl.ParallelFor(shards.output) as work:
            insert = on_cluster(insert_shard_op(params_yaml=params_yaml, tracking_uri=tracking_uri, milvus_uri=milvus_uri,
                                                work=work, dataset=ingest.outputs["dataset"],
                                                embeddings=plan.outputs["embeddings"]), cluster)
        promote = on_cluster(finish_promotion_op(params_yaml=params_yaml, tracking_uri=tracking_uri, milvus_uri=milvus_uri,
                                                 plan=plan.outputs["Output"],
                                                 partials=dsl.Collected(insert.outputs["top_k"]),
                                                 dataset=ingest.outputs["dataset"],
                                                 embeddings=plan.outputs["embeddings"]), cluster)
        on_cluster(dataset_drift_op(params_yaml=params_yaml, tracking_uri=tracking_uri, milvus_uri=milvus_uri,
                                    dataset=ingest.outputs["dataset"], split=drift_split).after(promote), cluster)
        return register.outputs["Output"]

    return training_pipeline


training_pipeline = build()


def compile_pipeline(path: Path = COMPILED, cluster: ClusterConfig = DEFAULT_CLUSTER) -> Path:
    compiler.Compiler().compile(build(cluster), str(path))
    return path


if __name__ == "__main__":
    print(f"wrote {compile_pipeline()}")
