"""Encoders that map an item to a d_max-dim embedding whose prefixes are trained to be embeddings."""

from mrl.models.encoders import ConvEncoder, MLPAdapter, build_encoder

__all__ = ["ConvEncoder", "MLPAdapter", "build_encoder"]
