"""The data sections: where items come from (ingest) and the gates they must pass (validation)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mrl.config.base import _Section

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


class IngestConfig(_Section):
    source: Literal["fashion_mnist", "image_folder", "embeddings", "video", "text"] = "fashion_mnist"  # format of `input`
    # idx directory, image folder, Parquet embeddings table, video folder, or a text table (JSONL, CSV or Parquet)
    input: str = DEFAULT_FASHION_MNIST_DIR
    image_size: int = Field(28, gt=0)  # image_folder, video: images (frames) are resized to image_size x image_size
    grayscale: bool = True  # image_folder, video: convert to 1 channel (True) or keep RGB (False)
    test_fraction: float = Field(0.2, gt=0, lt=1)  # image_folder without train/ and test/ subfolders
    split_seed: int = 0  # seed of that random train/test split
    id_column: str = "id"  # embeddings table: column of unique item ids
    label_column: str | None = "label"  # embeddings table: optional class label column (None: unlabeled)
    vector_column: str = "embedding"  # embeddings table: list<float> column, one vector per row
    split_column: str | None = "split"  # embeddings table: optional "train"/"test" column
    on_bad_file: Literal["fail", "skip"] = "fail"  # image_folder: a corrupt image stops the ingest, or is listed


class ValidationConfig(_Section):
    # Great Expectations gates on the dataset artifact (and on embedding tables). Fail closed.
    min_train_items: int = Field(100, ge=1)  # fewer train items than this fails
    min_test_items: int = Field(20, ge=1)
    min_class_share: float = Field(0.02, ge=0, le=1)  # every class's share of each split must be within
    max_class_share: float = Field(0.5, ge=0, le=1)  # [min_class_share, max_class_share]
    expected_classes: list[str] | None = None  # declared class names (None: whatever the artifact declares)
    vector_min_norm: float = Field(1e-6, ge=0)  # L2 norm bounds of vectors (items or embeddings)
    vector_max_norm: float = Field(1e4, gt=0)
