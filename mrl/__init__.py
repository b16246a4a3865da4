"""Matryoshka Representation Learning: one encoder whose embedding prefixes are each usable embeddings."""

import logging

__version__ = "0.1.0"

# FAISS logs, at INFO, each CPU-specific build it fails to load before the one it uses; a pipeline step's root
# logger is at INFO (kfp's executor sets it), so those lines would reach the user as if they were errors.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
