"""Stage 1: read raw input into the dataset artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mrl.config import IngestConfig
from mrl.data.artifact import save_dataset
from mrl.data.readers import read_embeddings_table, read_fashion_mnist, read_image_folder
from mrl.errors import MRLError

Source = Literal["fashion_mnist", "image_folder", "embeddings"]


@dataclass(frozen=True)
class IngestResult:
    path: Path
    kind: str
    n_train: int
    n_test: int
    classes: list[str]
    item_shape: tuple[int, ...]


def ingest(source: Source, input_path: str | Path, output_path: str | Path, cfg: IngestConfig) -> IngestResult:
    """Read `input_path` in format `source` and write the dataset artifact to `output_path`.

    Everything is read and checked before anything is written, so bad input leaves no output behind.
    """
    if source == "fashion_mnist":
        ds = read_fashion_mnist(input_path)
    elif source == "image_folder":
        ds = read_image_folder(input_path, cfg)
    elif source == "embeddings":
        ds = read_embeddings_table(input_path, cfg)
    elif source == "video":
        raise MRLError("ingest.source: video makes a frames artifact for the video index (`mrl ingest --source video`,"
                       " the mrl-video pipeline), not a training dataset; train on images, then index the videos")
    else:
        raise ValueError(f"unknown source {source!r}")
    path = save_dataset(ds, output_path)
    return IngestResult(
        path=path, kind=ds.kind, n_train=int((ds.split == "train").sum()), n_test=int((ds.split == "test").sum()),
        classes=[str(c) for c in ds.classes], item_shape=tuple(ds.x.shape[1:]),
    )
