"""`mrl` command line: one command per stage and a group per thing a user manages, each a thin call into the library.

    mrl ingest | validate | train | evaluate | embed | segment     the stages
    mrl model register | promote | rollback | list | compare        the MLflow registry (promote: the gate)
    mrl index promote | retier | rollback | unlock                  the Milvus collections behind the serving aliases
    mrl search | serve                                              one search, or the HTTP service
    mrl drift | retrain                                             monitoring, and starting the training pipeline
    mrl adapt                                                       Matryoshka prefixes for vectors you already have
    mrl pipeline run | compile | drift                              the Kubeflow pipelines
    mrl params show                                                 the resolved configuration

The names before the groups (`mrl promote`, `mrl promote-model`, `mrl models`, ...) still work, hidden, for one
release (RENAMED).
"""

from __future__ import annotations

import typer

from mrl.cli import adapt, index, model, monitor, params, pipeline, search, stages
from mrl.cli.common import renamed

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Matryoshka embeddings: train, evaluate, index, serve and monitor nested embeddings.")

for command in (stages.ingest, stages.validate, stages.train, stages.evaluate, stages.embed, stages.segment,
                search.search, search.serve, monitor.drift, monitor.retrain, adapt.adapt):
    app.command()(command)
app.add_typer(model.app, name="model")
app.add_typer(index.app, name="index")
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(params.app, name="params")

# old name -> (its command, the new name)
RENAMED = {
    "register": (model.register, "mrl model register"),
    "promote-model": (model.promote, "mrl model promote"),
    "rollback-model": (model.rollback, "mrl model rollback"),
    "models": (model.models, "mrl model list / mrl model compare"),
    "promote": (index.promote, "mrl index promote"),
    "rollback-index": (index.rollback, "mrl index rollback"),
    "unlock-index": (index.unlock, "mrl index unlock"),
    "show-params": (params.show, "mrl params show"),
}
for old, (command, new) in RENAMED.items():
    app.command(old, hidden=True)(renamed(command, new))


def main() -> None:  # pragma: no cover
    app(prog_name="mrl")
