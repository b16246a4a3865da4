"""The drift and cluster sections: monitoring the served index, and how the compiled pipelines run on Kubernetes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mrl.config.base import _Section


class DriftConfig(_Section):
    # A check compares a current window of embeddings with the reference saved at promotion, at each
    # prefix the served funnel uses, with one of Evidently's EmbeddingsDrift methods. Each threshold is
    # calibrated at promotion: the score's (1 - false_alarm_rate / tests) quantile over same-distribution
    # windows drawn from held-back reference rows, so an alarm means "rarer than that under no drift".
    method: Literal["mmd", "model", "distance", "ratio"] = "mmd"
    prefixes: list[int] = []  # nesting dims checked; [] = the served funnel's dims
    pca_components: int = Field(16, ge=0)  # PCA dims before the test (keeps MMD fast at 512 dims); 0 = off
    class_share: bool = True  # also test the class shares (labels, else nearest-class-centroid predictions)
    window_size: int = Field(1000, gt=1)  # current rows compared; larger windows are sampled down
    min_window: int = Field(100, gt=1)  # fewer current rows is an error, not a verdict
    reference_size: int = Field(1000, gt=1)  # reference rows every check compares against
    calibration_pool: int = Field(8000, gt=1)  # more reference rows, for the same-distribution windows
    # The thresholds are tail quantiles (1 - false_alarm_rate / tests): estimating them takes a few hundred windows.
    calibration_draws: int = Field(300, ge=20)
    false_alarm_rate: float = Field(0.02, gt=0, lt=1)  # target, all tests of one check together
    seed: int = 0
    reference_dir: str = "artifacts/drift/references"  # promotion writes <collection>.npz here
    workspace: str = "artifacts/drift/workspace"  # local Evidently workspace (evidently ui --workspace ...)
    project: str = "mrl-embedding-drift"  # Evidently project the snapshots go to
    # What a detected drift starts: nothing, the training pipeline on kfp.local, a run on a KFP host,
    # `dvc repro`, or a GitHub repository_dispatch event. Secrets ($KFP_TOKEN, $GITHUB_TOKEN) come from
    # the environment only, never from this file.
    on_drift: Literal["none", "local", "kfp", "dvc", "github"] = "none"
    # A drift found by the live recall audit alone (the funnel's recall below retrieval.target_recall, the embeddings
    # unchanged): start drift.on_drift as for any drift, or re-choose the funnel on the window's queries
    # (`mrl index retier`: no model runs).
    on_low_recall: Literal["on_drift", "retier"] = "on_drift"
    kfp_host: str = ""  # "" = $KFP_HOST
    github_repository: str = ""  # owner/name
    github_event: str = "mrl-drift"  # the event type retrain.yml listens for
    github_api_url: str = "https://api.github.com"

    @model_validator(mode="after")
    def _check_sizes(self) -> DriftConfig:
        if self.min_window > self.window_size:
            raise ValueError(f"min_window: {self.min_window} is larger than window_size {self.window_size}")
        if self.calibration_pool < self.window_size:
            raise ValueError(f"calibration_pool: {self.calibration_pool} rows cannot give windows of {self.window_size}")
        return self


class ClusterConfig(_Section):
    # How the compiled KFP pipelines run on Kubernetes (kfp-kubernetes); read at compile time
    # (`mrl pipeline compile --params ...`), ignored by kfp.local and dvc.
    secrets: list[str] = ["mrl-mlflow", "mrl-milvus", "mrl-drift"]  # keys become env vars of every step (optional)
    data_pvc: str = "mrl-data"  # mounted at /var/lib/mrl in every step ("" = none): query log, drift files
    train_gpus: int = Field(0, ge=0)  # nvidia.com/gpu limit of the training step (0 = CPU)
    gpu_node_selector: dict[str, str] = {"nvidia.com/gpu.present": "true"}  # training step, when train_gpus > 0
    gpu_toleration: str = "nvidia.com/gpu"  # taint key tolerated by the training step ("" = none)
    train_cpu: str = "2"  # requests of the training step
    train_memory: str = "8G"
