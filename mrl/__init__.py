"""Matryoshka Representation Learning: one encoder whose embedding prefixes are each usable embeddings."""

__version__ = "0.1.0"
