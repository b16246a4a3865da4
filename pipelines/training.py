"""Training pipeline: ingest -> validate -> train -> evaluate -> register and gate -> promote the index."""

from pathlib import Path

from kfp import compiler, dsl

from components import evaluate_op, ingest_op, promote_op, register_op, train_op, validate_op

COMPILED = Path(__file__).with_suffix(".yaml")


@dsl.pipeline(name="mrl-training",
              description="Train, measure and register a Matryoshka embedding model, then promote its Milvus index.")
def training_pipeline(params_yaml: str = "", source: str = "", input_path: str = "", tracking_uri: str = "",
                      milvus_uri: str = "") -> str:
    ingest = ingest_op(params_yaml=params_yaml, source=source, input_path=input_path)
    validate = validate_op(params_yaml=params_yaml, dataset=ingest.outputs["dataset"])
    train = train_op(params_yaml=params_yaml, dataset=ingest.outputs["dataset"]).after(validate)
    evaluate = evaluate_op(params_yaml=params_yaml, model=train.outputs["model"], dataset=ingest.outputs["dataset"])
    register = register_op(params_yaml=params_yaml, tracking_uri=tracking_uri, model=train.outputs["model"],
                           per_dim=evaluate.outputs["per_dim"], plot=evaluate.outputs["plot"])
    promote_op(params_yaml=params_yaml, tracking_uri=tracking_uri, milvus_uri=milvus_uri,
               version=register.outputs["Output"], dataset=ingest.outputs["dataset"])
    return register.outputs["Output"]


def compile_pipeline(path: Path = COMPILED) -> Path:
    compiler.Compiler().compile(training_pipeline, str(path))
    return path


if __name__ == "__main__":
    print(f"wrote {compile_pipeline()}")
