"""Kubeflow pipelines: wiring only. `python -m pipelines.training` compiles pipelines/training.yaml."""
