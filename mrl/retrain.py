"""Start retraining: what a detected drift (drift.on_drift) or the retrain workflow (`mrl retrain`) triggers.

- local:  the training pipeline on kfp.local, in this process's environment
- kfp:    the compiled training pipeline submitted to a KFP host (drift.kfp_host, else $KFP_HOST)
- dvc:    `dvc repro` in the working directory
- github: a repository_dispatch event (drift.github_event) to drift.github_repository, which retrain.yml
          listens for; the token is $GITHUB_TOKEN
- auto:   kfp when a KFP host is configured, else dvc (what retrain.yml runs)

Secrets come from the environment only, so params.yaml can be committed. The library does not import its
front-ends: local and kfp run through `Launchers` that the caller passes in (`pipelines.launch.launchers()`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl.config import Config, config_yaml
from mrl.errors import MRLError

HOW = ("local", "kfp", "dvc", "github", "auto")


@dataclass(frozen=True)
class Launchers:
    """How the training pipeline starts: on kfp.local in this environment, or submitted to a KFP host."""

    run_local: Callable[..., str]  # (params_yaml, tracking_uri, pipeline_root, source, input_path, milvus_uri)
    submit: Callable[..., str]  # (host, params_yaml, tracking_uri, experiment, source, input_path, milvus_uri)


def kfp_host(cfg: Config) -> str:
    return cfg.drift.kfp_host or os.environ.get("KFP_HOST", "")


def resolve_how(cfg: Config, how: str) -> str:
    """`how` with auto resolved: kfp when a KFP host is configured, else dvc."""
    if how not in HOW:
        raise MRLError(f"retrain: unknown way {how!r} (choose from {', '.join(HOW)})")
    if how == "auto":
        return "kfp" if kfp_host(cfg) else "dvc"
    return how


def retrain(cfg: Config, how: str, input_path: str = "", tracking_uri: str = "", milvus_uri: str = "",
            payload: dict[str, Any] | None = None, launchers: Launchers | None = None,
            log: Callable[[str], None] = print) -> str:
    """Start retraining `how`; returns a one-line description of what was started. The pipeline gets `cfg` itself
    (as params YAML), so command-line overrides reach its steps."""
    how = resolve_how(cfg, how)
    if how in ("local", "kfp") and launchers is None:
        raise MRLError(f"retrain: {how} needs the pipeline launchers (pass `pipelines.launch.launchers()`)")
    if how == "local":
        version = launchers.run_local(config_yaml(cfg), tracking_uri or "", Path("artifacts/kfp"), cfg.ingest.source,
                                      input_path or cfg.ingest.input, milvus_uri)
        return f"training pipeline ran on kfp.local: model version {version}"
    if how == "kfp":
        host = kfp_host(cfg)
        if not host:
            raise MRLError("retrain: kfp needs a host (drift.kfp_host or $KFP_HOST)")
        run_id = launchers.submit(host, config_yaml(cfg), tracking_uri, cfg.registry.experiment, cfg.ingest.source,
                                  input_path or cfg.ingest.input, milvus_uri)
        return f"training pipeline submitted to {host}: run {run_id}"
    if how == "dvc":
        dvc = shutil.which("dvc")
        if dvc is None:
            raise MRLError("retrain: dvc is not on PATH")
        log("running dvc repro ...")
        done = subprocess.run([dvc, "repro"], check=False)
        if done.returncode != 0:
            raise MRLError(f"retrain: dvc repro failed (exit code {done.returncode})")
        return "dvc repro finished"
    return dispatch_github(cfg, payload or {})


def on_drift(cfg: Config, summary: dict[str, Any], tracking_uri: str = "", milvus_uri: str = "",
             launchers: Launchers | None = None, log: Callable[[str], None] = print, window: str = "") -> str:
    """Start drift.on_drift after a detected drift: the one action `mrl drift` and the drift pipeline's retrain
    step share. `summary` is the check's summary.json (DriftResult.as_dict()); its verdict travels as the payload
    (the GitHub event's client_payload). With drift.on_low_recall: retier, a drift found by the recall audit alone
    re-chooses the funnel on the window's queries (`window`, a query-log directory) instead."""
    drifted = [t["name"] for t in summary.get("tests", []) if t.get("drifted")]
    if cfg.drift.on_low_recall == "retier" and drifted and all(n.startswith("funnel_recall@") for n in drifted):
        from mrl.retier import retier_index  # here: it imports the funnel choice (FAISS), which retraining needs not

        queries = Path(window) if window and Path(window).is_dir() else None
        r = retier_index(cfg, milvus_uri or None, tracking_uri or None, queries, log=log)
        return (f"funnel recall below target: retiered {cfg.retrieval.collection_prefix} -> {r.collection} "
                f"(funnel {r.chosen.funnel.name()})" if r.swapped else
                "funnel recall below target, but the served funnel still wins on these queries: nothing rebuilt")
    if cfg.drift.on_drift == "none":
        return "drift.on_drift is none: no retraining started"
    payload = {"report": summary.get("report_html", ""), "checked_at": summary.get("checked_at", ""),
               "tests": [t["name"] for t in summary.get("tests", []) if t.get("drifted")],
               "collection": summary.get("reference_meta", {}).get("collection")}
    return retrain(cfg, cfg.drift.on_drift, tracking_uri=tracking_uri, milvus_uri=milvus_uri, payload=payload,
                   launchers=launchers, log=log)


def dispatch_github(cfg: Config, payload: dict[str, Any]) -> str:
    repo, token = cfg.drift.github_repository, os.environ.get("GITHUB_TOKEN", "")
    if not repo or repo.count("/") != 1:
        raise MRLError(f"drift.github_repository: expected owner/name, got {repo!r}")
    if not token:
        raise MRLError("retrain: github needs a token in $GITHUB_TOKEN (repo scope, or a fine-grained contents:write)")
    url = f"{cfg.drift.github_api_url.rstrip('/')}/repos/{repo}/dispatches"
    body = json.dumps({"event_type": cfg.drift.github_event, "client_payload": payload}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Accept": "application/vnd.github+json", "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": "2022-11-28", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        raise MRLError(f"retrain: GitHub answered {e.code} to repository_dispatch on {repo} ({e.reason})") from None
    except (urllib.error.URLError, TimeoutError) as e:
        raise MRLError(f"retrain: cannot reach {url} ({getattr(e, 'reason', e)})") from None
    if status != 204:
        raise MRLError(f"retrain: GitHub answered {status} to repository_dispatch on {repo}, expected 204")
    return f"repository_dispatch {cfg.drift.github_event!r} sent to {repo}"
