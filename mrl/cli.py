"""`mrl` command line: one command per stage, each a thin call into the library."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mrl.config import DEFAULT_FASHION_MNIST_DIR, load_config
from mrl.errors import MRLError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Matryoshka Representation Learning: ingest, train, evaluate and embed.")

ParamsOpt = Annotated[Path | None, typer.Option("--params", "-p", help="params.yaml (default: embedded defaults)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a param: section.key=value")]


def fails_cleanly(command):
    """Turn MRLError into a one-line message on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MRLError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@fails_cleanly
def ingest(
    output: Annotated[Path, typer.Option(help="dataset artifact to write (.npz)")],
    source: Annotated[str, typer.Option(help="fashion_mnist | image_folder | embeddings")] = "fashion_mnist",
    input: Annotated[Path, typer.Option("--input", help="idx directory, image folder or Parquet table")] = Path(
        DEFAULT_FASHION_MNIST_DIR),
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Read raw data into a dataset artifact (ids, labels, split)."""
    from mrl.ingest import ingest as run

    if source not in ("fashion_mnist", "image_folder", "embeddings"):
        raise MRLError(f"--source: unknown source {source!r} (fashion_mnist, image_folder or embeddings)")
    cfg = load_config(params, set_ or [])
    r = run(source, input, output, cfg.ingest)  # type: ignore[arg-type]
    typer.echo(f"wrote {r.path}: {r.kind} {list(r.item_shape)}, {r.n_train} train + {r.n_test} test items, "
               f"{len(r.classes)} classes")


@app.command()
@fails_cleanly
def train(
    data: Annotated[Path, typer.Option(help="dataset artifact from `mrl ingest`")],
    out: Annotated[Path, typer.Option(help="checkpoint to write (.pt), updated every epoch")],
    params: ParamsOpt = None,
    set_: SetOpt = None,
    resume: Annotated[Path | None, typer.Option(help="checkpoint to resume from")] = None,
):
    """Train an encoder with MatryoshkaLoss."""
    from mrl.train import train as run

    cfg = load_config(params, set_ or [])
    r = run(cfg, data, out, resume=resume, log=typer.echo)
    typer.echo(f"wrote {r.path}: {r.epochs} epochs, final loss {r.final_loss:.4f}, {r.seconds:.0f}s "
               f"({r.items_per_second:,.0f} items/s)")


@app.command()
@fails_cleanly
def evaluate(
    model: Annotated[Path, typer.Option(help="checkpoint from `mrl train`")],
    data: Annotated[Path, typer.Option(help="dataset artifact (train split = database, test split = queries)")],
    metrics_out: Annotated[Path | None, typer.Option(help="JSON of metrics keyed by dim")] = None,
    plot_out: Annotated[Path | None, typer.Option(help="PNG plot of each metric against dim")] = None,
    params: ParamsOpt = None,
    set_: SetOpt = None,
):
    """Measure every nested prefix: linear probe, own head, 1-NN, mAP@k and recall@k."""
    from mrl.evaluate import evaluate as run
    from mrl.evaluate import format_table

    cfg = load_config(params, set_ or [])
    r = run(model, data, cfg.evaluate, metrics_out, plot_out)
    typer.echo(format_table(r.per_dim))
    for path in (r.json_path, r.plot_path):
        if path:
            typer.echo(f"wrote {path}")


@app.command()
@fails_cleanly
def embed(
    model: Annotated[Path, typer.Option(help="checkpoint from `mrl train`")],
    data: Annotated[Path, typer.Option(help="dataset artifact to embed")],
    out: Annotated[Path, typer.Option(help="Parquet table to write (id, label, split, embedding)")],
    batch_size: Annotated[int, typer.Option(min=1)] = 1024,
):
    """Write a model's full embeddings of a dataset as an embeddings table."""
    from mrl.evaluate import embed as run

    typer.echo(f"wrote {run(model, data, out, batch_size)}")


@app.command("show-params")
@fails_cleanly
def show_params(params: ParamsOpt = None, set_: SetOpt = None):
    """Validate params and print the resolved configuration."""
    typer.echo(json.dumps(load_config(params, set_ or []).model_dump(mode="json"), indent=2))


def main() -> None:  # pragma: no cover
    app(prog_name="mrl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
