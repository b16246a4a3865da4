"""Datasets: readers for Fashion-MNIST idx files, image folders and embedding tables, and the artifact."""

from mrl.data.artifact import Dataset, load_dataset, save_dataset

__all__ = ["Dataset", "load_dataset", "save_dataset"]
