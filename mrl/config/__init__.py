"""One typed, validated configuration object loaded from params.yaml.

Every section maps to a stage. Unknown keys and wrong types fail with the dotted key's name, so a
typo in params.yaml can never silently fall back to a default.

Modules, each importing only those listed before it: base (the section base class), data (ingest, validation),
training (model, loss, train, evaluate), retrieval (registry, retrieval), media (video, text), operations (drift,
cluster), adapt, schema (Config, the whole), recording ($MRL_PARAMS_READ_LOG), loading (params text to a Config).
"""

from mrl.config.adapt import AdaptConfig
from mrl.config.data import DEFAULT_FASHION_MNIST_DIR, IngestConfig, ValidationConfig
from mrl.config.loading import apply_overrides, config_from_dict, config_yaml, load_config, parse_params
from mrl.config.media import TextConfig, VideoConfig
from mrl.config.operations import ClusterConfig, DriftConfig
from mrl.config.recording import PARAMS_READ_LOG
from mrl.config.retrieval import RegistryConfig, RetrievalConfig
from mrl.config.schema import Config
from mrl.config.training import EvaluateConfig, LossConfig, ModelConfig, TrainConfig

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "PARAMS_READ_LOG",
    "AdaptConfig",
    "ClusterConfig",
    "Config",
    "DriftConfig",
    "EvaluateConfig",
    "IngestConfig",
    "LossConfig",
    "ModelConfig",
    "RegistryConfig",
    "RetrievalConfig",
    "TextConfig",
    "TrainConfig",
    "ValidationConfig",
    "VideoConfig",
    "apply_overrides",
    "config_from_dict",
    "config_yaml",
    "load_config",
    "parse_params",
]
