"""Search a text dataset's documents with a query text: the query embedded by the dataset's own encoder, then (with an
adapter) through the adapter, compared with every document on a prefix of `dim` dims (exact cosine search).

`search_text` searches the artifact in memory, to try a prefix size by hand. The served index (Milvus, built by
`mrl index promote --data text.npz`) is searched by `mrl serve` and `mrl search --text` without --data: the query embedded by
the registered adapter's base encoder and the adapter (`TextQueryEncoder`), the hits given their texts
(`DocumentTexts`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mrl.config import Config, TextConfig
from mrl.errors import MRLError
from mrl.retrieval.funnel import normalized_prefix
from mrl.text.adapter import apply_adapter, load_adapter
from mrl.text.artifact import TEXT_FIELD, load_text_dataset
from mrl.text.encoder import embed_texts, load_encoder, model_key, resolve_model_dir
from mrl.tracking import TEXT_MODEL_KEY_TAG, TEXT_MODEL_TAG, client


def search_text(query: str, data_path: str | Path, cfg: TextConfig, model_path: str | Path | None = None,
                dim: int | None = None, k: int = 10) -> tuple[list[dict], int]:
    """The k documents nearest `query` (id, text, score), and the dim they were compared at."""
    if not query.strip():
        raise MRLError("--text: the query is empty")
    td = load_text_dataset(data_path)
    model_dir = resolve_model_dir(td.model)
    if model_key(model_dir) != td.model_key:
        raise MRLError(f"{data_path}: its encoder {td.model} has changed since ingest (different files); ingest again")
    q, _ = embed_texts([query], cfg.model_copy(update={"model": str(model_dir), "cache_dir": ""}), log=lambda _: None)
    docs = td.documents.x
    if model_path is not None:
        loaded = load_adapter(model_path)
        if loaded.meta["text_model_key"] != td.model_key:
            raise MRLError(f"{model_path}: trained on embeddings of {loaded.meta['text_model']}, not {td.model}")
        q, docs = apply_adapter(loaded.adapter, q), apply_adapter(loaded.adapter, docs)
    dim = dim or td.dim
    if not 0 < dim <= td.dim:
        raise MRLError(f"--dim: {dim} is outside 1..{td.dim}")
    scores = normalized_prefix(docs, dim) @ normalized_prefix(q, dim)[0]
    top = np.argsort(-scores, kind="stable")[:k]
    hits = [{"id": str(td.documents.ids[i]), "text": str(td.doc_texts[i]), "score": float(scores[i])} for i in top]
    return hits, dim


# --- the served index: query text embedded by the registered adapter's base encoder, then the adapter -------------

MAX_QUERY_CHARS = 10_000  # a query longer than this is refused (the encoder reads its first ~256 tokens anyway)


def check_query_text(text: str) -> str:
    """ValueError unless `text` is a usable query (the service answers it with a 422)."""
    if not text.strip():
        raise ValueError("text: the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"text: {len(text):,} characters; at most {MAX_QUERY_CHARS:,}")
    return text


def registered_base_model(tags: dict[str, str], cfg: TextConfig) -> Path:
    """The base sentence encoder a registered text adapter was trained on (run tags mrl.text_model, mrl.text_model_key):
    the recorded directory where it exists with the same files, else text.model (e.g. the packaged default installed
    in another environment) if its files hash to the same key. Anything else would embed queries into another space."""
    recorded, key = tags.get(TEXT_MODEL_TAG, ""), tags.get(TEXT_MODEL_KEY_TAG, "")
    if not key:
        raise MRLError(f"the registered text adapter's run has no {TEXT_MODEL_KEY_TAG} tag: register it again with "
                       "`mrl model register`")
    candidates = [Path(recorded)] if recorded and Path(recorded).is_dir() else []
    candidates.append(resolve_model_dir(cfg.model))
    for model_dir in candidates:
        if model_key(model_dir.resolve()) == key:
            return model_dir.resolve()
    raise MRLError(f"the registered text adapter was trained on {recorded} (key {key}); neither that directory nor "
                   f"text.model ({candidates[-1]}, key {model_key(candidates[-1])}) is that encoder: set text.model "
                   "to a copy of it")


class TextQueryEncoder:
    """Query text -> the registered adapter's embedding: the base encoder (loaded once) then the adapter."""

    def __init__(self, adapter: torch.nn.Module, model_dir: Path, device: str = "cpu"):
        self.adapter, self.model_dir = adapter, model_dir
        self.base = load_encoder(model_dir, device)

    def __call__(self, texts: list[str]) -> np.ndarray:
        base = self.base.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)
        with torch.no_grad():
            return self.adapter(torch.from_numpy(np.asarray(base, np.float32))).numpy()


class DocumentTexts:
    """Documents' texts of a text collection (the `text` field written at promotion), read from Milvus by id, one
    `get` per search for the ids not yet cached; the most recent `max_cached` kept in memory."""

    def __init__(self, client, name: str, max_cached: int = 10_000):
        self.client, self.name, self.field, self.max_cached = client, name, TEXT_FIELD, max_cached
        self.stored = TEXT_FIELD in {f["name"] for f in client.describe_collection(name)["fields"]}
        self._cache: dict[str, str] = {}

    def add_to(self, hits: list[dict]) -> list[dict]:
        """Each hit with its document's "text" (where the collection stores texts)."""
        if not self.stored or not hits:
            return hits
        missing = list({h["id"] for h in hits if h["id"] not in self._cache})
        if missing:
            for row in self.client.get(self.name, ids=missing, output_fields=[self.field]):
                if len(self._cache) >= self.max_cached:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[row["id"]] = row[self.field]
        for h in hits:
            h["text"] = self._cache.get(h["id"], "")
        return hits


def served_text_encoder(cfg: Config, tracking_uri: str | None, run_id: str, adapter: torch.nn.Module) -> TextQueryEncoder:
    """The query encoder of a registered text adapter (`adapter`, loaded from its models:/ URI; `run_id`, its run)."""
    tags = client(tracking_uri).get_run(run_id).data.tags
    return TextQueryEncoder(adapter, registered_base_model(tags, cfg.text), cfg.text.device)
