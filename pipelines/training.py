"""Training pipeline: ingest -> validate -> train -> evaluate -> register and gate."""

from pathlib import Path

from kfp import compiler, dsl

from components import evaluate_op, ingest_op, register_op, train_op, validate_op

COMPILED = Path(__file__).with_suffix(".yaml")


@dsl.pipeline(name="mrl-training", description="Train, measure and register a Matryoshka embedding model.")
def training_pipeline(params_yaml: str = "", source: str = "", input_path: str = "", tracking_uri: str = "") -> str:
    ingest = ingest_op(params_yaml=params_yaml, source=source, input_path=input_path)
    validate = validate_op(params_yaml=params_yaml, dataset=ingest.outputs["dataset"])
    train = train_op(params_yaml=params_yaml, dataset=ingest.outputs["dataset"]).after(validate)
    evaluate = evaluate_op(params_yaml=params_yaml, model=train.outputs["model"], dataset=ingest.outputs["dataset"])
    register = register_op(params_yaml=params_yaml, tracking_uri=tracking_uri, model=train.outputs["model"],
                           per_dim=evaluate.outputs["per_dim"], plot=evaluate.outputs["plot"])
    return register.outputs["Output"]


def compile_pipeline(path: Path = COMPILED) -> Path:
    compiler.Compiler().compile(training_pipeline, str(path))
    return path


if __name__ == "__main__":
    print(f"wrote {compile_pipeline()}")
