"""Text: a corpus embedded by a frozen sentence encoder, and a Matryoshka adapter trained on (query, document) pairs.

encoder: the sentence-transformers model (offline) and the embedding cache; readers: JSONL/CSV/Parquet tables and
pairs; artifact: the text dataset (documents as a "vectors" dataset, queries and pairs alongside); adapter: the
identity-initialised adapter; train: MatryoshkaLoss over in-batch InfoNCE; evaluate: per-dim retrieval against
truncation and PCA; wordnet: the development corpus (a reverse dictionary).
"""
