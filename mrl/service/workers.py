"""`mrl serve --workers N`: N server processes on one port, each with its own Searcher over the same collection.

Uvicorn's process manager starts them, and replaces one that dies (a crash, an OOM kill, SIGKILL) while the others
keep answering. Each worker builds the app from the arguments `mrl serve` was given (passed in an environment
variable: the manager imports this module by name in every new process). The memory backend in each worker starts
from the collection's snapshot (mrl.retrieval.snapshot): memory-mapped, so the re-rank table's pages are shared by
the workers, and a replaced worker is ready in seconds.
"""

from __future__ import annotations

import json
import os

from mrl.config import load_config
from mrl.errors import MRLError
from mrl.retrieval import milvus_index as mi

ARGS_ENV = "MRL_SERVE_WORKER_ARGS"


def check_shared_milvus(milvus_uri: str | None, workers: int) -> None:
    """Several workers need a Milvus every process can reach: a Milvus Lite data directory opens in one only."""
    uri = mi.resolve_milvus_uri(milvus_uri)
    if workers > 1 and "://" not in uri:
        raise MRLError(f"--workers {workers}: the Milvus Lite data directory {uri} opens in one process only; serve "
                       f"it with `milvus-lite server --data-dir {uri} --port 19530` and pass --milvus-uri "
                       "http://127.0.0.1:19530 (and --set retrieval.snapshot_dir=... for the workers to start from a "
                       "snapshot)")


def save_args(params: str | None, overrides: list[str], **app_kwargs) -> None:
    """What every worker's `app()` builds the service from."""
    os.environ[ARGS_ENV] = json.dumps({"params": params, "set": overrides, "app": app_kwargs})


def app():
    """The app of one worker (uvicorn factory)."""
    from mrl.service.app import create_app

    args = json.loads(os.environ[ARGS_ENV])
    return create_app(load_config(args["params"], args["set"]), **args["app"])
