"""Stage 1: read raw input into the dataset artifact."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mrl.config import IngestConfig, TextConfig
from mrl.data.artifact import save_dataset
from mrl.data.readers import read_embeddings_table, read_fashion_mnist, read_image_folder
from mrl.errors import MRLError

Source = Literal["fashion_mnist", "image_folder", "embeddings", "text"]


@dataclass(frozen=True)
class IngestResult:
    path: Path
    kind: str
    n_train: int
    n_test: int
    classes: list[str]
    item_shape: tuple[int, ...]
    details: Any = None  # text: the TextIngestResult (documents, queries, pairs, embedding throughput)
    skipped: tuple[str, ...] = ()  # image_folder with ingest.on_bad_file: skip: "path: reason" of files left out


def ingest(source: Source, input_path: str | Path, output_path: str | Path, cfg: IngestConfig,
           text: TextConfig | None = None, pairs: str | Path | None = None,
           log: Callable[[str], None] = print) -> IngestResult:
    """Read `input_path` in format `source` and write the dataset artifact to `output_path`.

    Everything is read and checked before anything is written, so bad input leaves no output behind.
    Text (`text`: the text section, `pairs`: form-2 pairs file) writes a text dataset; n_train / n_test count its
    queries, since its documents are all catalogue.
    """
    if source == "text":
        # here: sentence-transformers adds ~2 s (measured 2-7 s) to every other source
        from mrl.text.ingest import ingest_text

        r = ingest_text(input_path, output_path, text or TextConfig(), pairs, log)
        return IngestResult(path=r.path, kind="text", n_train=r.train_queries, n_test=r.test_queries, classes=[],
                            item_shape=(r.dim,), details=r)
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
        classes=[str(c) for c in ds.classes], item_shape=tuple(ds.x.shape[1:]), skipped=tuple(ds.skipped),
    )
