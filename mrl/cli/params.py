"""`mrl params`: the configuration every command reads (params.yaml over the embedded defaults, then --set)."""

from __future__ import annotations

import json

import typer

from mrl.cli.common import ParamsOpt, SetOpt, fails_cleanly
from mrl.config import load_config

app = typer.Typer(no_args_is_help=True, help="The configuration: params.yaml over the embedded defaults.")


@app.command()
@fails_cleanly
def show(params: ParamsOpt = None, set_: SetOpt = None):
    """Validate params and print the resolved configuration."""
    typer.echo(json.dumps(load_config(params, set_ or []).model_dump(mode="json"), indent=2))
