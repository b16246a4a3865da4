"""The image every component runs in. Build it from the root Dockerfile and push it under this name,
or change it here and recompile the pipelines (`mrl pipeline compile`)."""

MRL_IMAGE = "ghcr.io/mrl-platform/mrl:0.1.0"
