"""The adapt section: Matryoshka prefixes for embeddings you already have (`mrl adapt`), without re-encoding."""

from __future__ import annotations

from itertools import pairwise

from pydantic import Field, field_validator

from mrl.config.base import _Section


class AdaptConfig(_Section):
    # Where the vectors are: a Milvus collection's fields, or a vectors file's columns (Parquet / npz).
    id_field: str = "id"
    vector_field: str = "embedding"
    label_field: str = ""  # optional: carried to the adapted collection's label ("" = none)
    # What is trained: a rotation y = Qx of the L2-normalized base vector (every full-dim cosine kept exactly), starting
    # on the vectors' principal directions, so that the leading dims hold what the neighbours need.
    nesting_dims: list[int] = []  # [] = 8, 16, 32, ... below the base dim, then the base dim
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(512, ge=8)  # vectors per step: their in-batch similarities are what is matched
    lr: float = Field(0.01, gt=0)  # peak AdamW learning rate (warmup: train.warmup_fraction, then cosine decay)
    tau: float = Field(0.05, gt=0)  # softmax temperature of the similarity distributions matched per prefix
    max_train: int = Field(200_000, gt=0)  # vectors trained on (a larger set: a seeded sample)
    # How it is judged: neighbour recall@k against the base's exact top k, on held-out vectors.
    holdout: int = Field(1000, gt=0)  # held-out vectors: the evaluation's queries and the funnel's
    eval_k: int = Field(10, gt=0)
    tolerance: float = Field(0.005, ge=0)  # below truncation by more than this at any dim: not registered

    @field_validator("nesting_dims")
    @classmethod
    def _increasing(cls, dims: list[int]) -> list[int]:
        if any(d <= 0 for d in dims) or any(b <= a for a, b in pairwise(dims)):
            raise ValueError(f"must be positive and strictly increasing, got {dims}")
        return dims
