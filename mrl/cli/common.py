"""What every command shares: the options of params, MLflow and Milvus, the one-line error, JSON outputs.

Commands import the library inside their bodies, not at the top: importing every stage costs ~8 s (evidently 4.3 s,
great_expectations 3.5 s, torch 2 s, mlflow 1.6 s, measured), which `mrl --help` and every command would pay, and each
DVC stage declares exactly the mrl modules its own command imports (tests/pipeline/test_dvc_params.py).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from mrl.errors import MRLError

ParamsOpt = Annotated[Path | None, typer.Option("--params", "-p", help="params.yaml (default: embedded defaults)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a param: section.key=value")]
TrackingOpt = Annotated[str | None, typer.Option(help="MLflow URI [env MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]")]
MilvusOpt = Annotated[str | None, typer.Option(help="Milvus URI or Milvus Lite file [env MILVUS_URI, else ./milvus.db]")]
VideosOpt = Annotated[bool, typer.Option("--videos", help="the video segments alias (video.collection_prefix)")]


def sleeping_openmp_waits() -> None:
    """Text embedding and adapter training: OpenMP threads sleep instead of busy-waiting. With busy-waiting, one of
    2 cores taken by another process made each adapter step ~16x slower and embedding ~1.7x slower (measured); on an
    idle machine sleeping costs almost nothing. libgomp reads this when torch loads: call before importing torch."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


def renamed(command, new_name: str):
    """`command` under its old name, for one release: it runs as before, after a note on stderr."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        typer.echo(f"note: this command is now `{new_name}`; the old name goes in the next release", err=True)
        return command(*args, **kwargs)

    return wrapper


def write_json(path: Path | None, payload: dict) -> None:
    if path:
        from mrl.data.artifact import atomic_write  # not plumbing: a DVC dep of the stages that write JSON

        atomic_write(path, lambda f: f.write((json.dumps(payload, indent=2) + "\n").encode()))
