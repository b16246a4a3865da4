"""The whole configuration: one section per stage, and the checks that span sections."""

from __future__ import annotations

from pydantic import model_validator

from mrl.config.adapt import AdaptConfig
from mrl.config.base import _Section
from mrl.config.data import IngestConfig, ValidationConfig
from mrl.config.media import TextConfig, VideoConfig
from mrl.config.operations import ClusterConfig, DriftConfig
from mrl.config.retrieval import RegistryConfig, RetrievalConfig
from mrl.config.training import EvaluateConfig, LossConfig, ModelConfig, TrainConfig


class Config(_Section):
    ingest: IngestConfig = IngestConfig()
    validation: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    registry: RegistryConfig = RegistryConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    drift: DriftConfig = DriftConfig()
    video: VideoConfig = VideoConfig()
    text: TextConfig = TextConfig()
    cluster: ClusterConfig = ClusterConfig()
    adapt: AdaptConfig = AdaptConfig()

    @model_validator(mode="after")
    def _check_weights(self) -> Config:
        weights = self.loss.dim_weights
        if weights is not None and len(weights) != len(self.model.nesting_dims):
            raise ValueError(
                f"loss.dim_weights: {len(weights)} weights for {len(self.model.nesting_dims)} nesting_dims"
            )
        return self
