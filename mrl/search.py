"""Search of the served indexes: one object for the HTTP service, `mrl search` and the pipeline's summary.

A `Searcher` opens the items index (behind retrieval.collection_prefix) and the video segments index (behind
video.collection_prefix), each where its alias exists, with the registered model that built them. It embeds a query
of any kind (a vector, a stored id, an image, a clip, a text), runs the served funnel (or the explorer: any shortlist
d0@k0, and exact search beside it) and describes the hits (labels, documents' texts, video spans). Front-ends only
parse requests and print or serialise `Hits`: a bad query is a `QueryError`, an unknown id or an index that is not
served a `NotFound`, both MRLErrors with a one-line message.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mrl.champion import load_registered_model, resolve_champion
from mrl.config import Config
from mrl.data.images import model_pixels
from mrl.data.thumbnails import Thumbnails
from mrl.errors import MRLError
from mrl.retrieval import milvus_index as mi
from mrl.retrieval.backends import open_served_index
from mrl.text.search import DocumentTexts, check_query_text, served_text_encoder
from mrl.tracking import client as mlflow_client
from mrl.video.search import embed_clip, open_video_index

QUERY_KINDS = ("vector", "id", "image", "clip", "text")  # what a search can search with (exactly one)
INDEXES = ("items", "videos")
MAX_K0 = 10_000  # the explorer's largest shortlist


class QueryError(MRLError):
    """A query the served index cannot answer (the service's 422)."""


class NotFound(MRLError):
    """An unknown id, or no index of the asked kind served (the service's 404)."""


@dataclass
class Query:
    """Exactly one of: a full-dim vector, a stored item's (or segment's) id, an encoded image (bytes), a video clip
    (a file), or a query text. `label` names it in error messages (a file path; default: the kind)."""

    vector: np.ndarray | list[float] | None = None
    id: str | None = None
    image: bytes | None = None
    clip: Path | None = None
    text: str | None = None
    label: str = ""

    @property
    def kind(self) -> str:
        given = [name for name in QUERY_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise QueryError(f"give exactly one of {', '.join(QUERY_KINDS)} (got {given or 'none'})")
        return given[0]

    def fail(self, reason: str) -> QueryError:
        return QueryError(f"{self.label or self.kind}: {reason}")


@dataclass
class Hits:
    """One search's answer: the hits best first, per-stage timings (ms), and what answered it."""

    results: list[dict]
    timings_ms: dict[str, float]
    collection: str
    model_version: str
    funnel: str
    query: np.ndarray  # the query embedding (full dim), e.g. for a query log
    exact: dict | None = None  # the explorer's exact search: results, ms, recall of `results`
    kind: str = ""

    def to_dict(self) -> dict:
        return {"results": self.results, "timings_ms": self.timings_ms, "collection": self.collection,
                "model_version": self.model_version, "funnel": self.funnel} | (
            {"exact": self.exact} if self.exact is not None else {})


def decode_image(data: bytes, item_shape: list[int]) -> np.ndarray:
    """Encoded image bytes -> uint8 array of the model's item shape (C, H, W), prepared as ingest prepares images (EXIF
    orientation, mode, shorter side resized and centre cropped); ValueError if undecodable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return model_pixels(img, item_shape[0], item_shape[-1])
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"not a readable image ({type(e).__name__})") from None


@dataclass
class Model:
    """The registered model that built the served indexes, for embedding queries."""

    name: str
    version: str
    kind: str  # what it embeds: images, vectors, text
    item_shape: list[int]
    module: object  # torch module
    text_encoder: object | None = None  # text adapters: query text -> embedding (mrl.text.search.TextQueryEncoder)

    @classmethod
    def load(cls, cfg: Config, tracking_uri: str | None, name: str, version: str) -> Model:
        """Version `version` of registered model `name`: the one a served collection records it was built by."""
        champion = resolve_champion(cfg, tracking_uri, version, name)
        mlflow_client(tracking_uri)  # the registry that models:/ refers to
        module = load_registered_model(champion.model_uri)
        text_encoder = None
        if champion.kind == "text":  # the base sentence encoder: loaded once per process (mrl.text.encoder)
            text_encoder = served_text_encoder(cfg, tracking_uri, champion.run_id, module)
        return cls(name, version, champion.kind, champion.item_shape, module, text_encoder)

    def embed_batch(self, x: np.ndarray) -> np.ndarray:
        """Pixels (N, C, H, W) or vectors (N, D) -> embeddings, as the model embeds its catalogue."""
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


@dataclass
class Searcher:
    """The served indexes (either may be None), the model that built them (None: only vector and id queries) and
    the Milvus client they read from."""

    cfg: Config
    items: object | None  # MemoryFunnelIndex or MilvusFunnelIndex (mrl.retrieval.backends)
    videos: object | None  # VideoIndex (mrl.video.search)
    client: object
    model: Model | None = None
    texts: DocumentTexts | None = None  # documents' texts of a text collection
    thumbnails: Thumbnails | None = None  # items' thumbnails stored at promotion

    @classmethod
    def open(cls, cfg: Config, milvus_uri: str | None = None, tracking_uri: str | None = None, load_model: bool = True,
             client=None, log: Callable[[str], None] | None = None, one_shot: bool = False,
             only: str | None = None) -> Searcher:
        """The indexes whose aliases exist (at least one must), or `only` the items or videos index. `one_shot` (a
        single command-line search): under serve_backend auto, ask Milvus directly rather than read whole
        collections into memory. `load_model`: load the registered model that built them, for image, clip and text
        queries."""
        client = client or mi.connect(milvus_uri)
        videos = items = None
        if only == "videos" or (only is None and mi.alias_target(client, cfg.video.collection_prefix) is not None):
            videos = open_video_index(cfg, milvus_uri, client, log, one_shot)
        if only == "items" or (only is None and (videos is None or mi.alias_target(
                client, cfg.retrieval.collection_prefix) is not None)):
            items = open_served_index(cfg.retrieval, milvus_uri, client, log, one_shot)
        info = (items or videos).info
        model = Model.load(cfg, tracking_uri, info.model_name, info.model_version) if load_model else None
        texts = DocumentTexts(client, items.name) if items is not None else None
        thumbnails = Thumbnails(client, items.name) if items is not None else None
        return cls(cfg, items, videos, client, model, texts, thumbnails)

    @property
    def model_version(self) -> str:
        return (self.items or self.videos).info.model_version

    def collections(self) -> tuple[str | None, str | None]:
        """The collections served: (items, videos)."""
        return (self.items.name if self.items else None, self.videos.name if self.videos else None)

    def alias_targets(self) -> tuple[str | None, str | None]:
        """Where the aliases point now: (items, videos); differs from `collections()` after a promotion or
        rollback."""
        return (mi.alias_target(self.client, self.cfg.retrieval.collection_prefix),
                mi.alias_target(self.client, self.cfg.video.collection_prefix))

    def index(self, which: str = "items"):
        """The items or videos index; NotFound if it is not served."""
        index = self.videos if which == "videos" else self.items
        if index is None:
            alias = self.cfg.video.collection_prefix if which == "videos" else self.cfg.retrieval.collection_prefix
            raise NotFound(f"index: no {which} index is served (Milvus alias {alias} does not exist)")
        return index

    # ------------------------------------------------------------------------------------------ embedding queries

    def embed(self, query: Query, which: str = "items") -> np.ndarray:
        """The query's full-dim embedding, as the served model embeds (QueryError, NotFound)."""
        kind, index = query.kind, self.index(which)
        if kind == "vector":
            vector = self._checked_vector(query, index.info.nesting_dims[-1])
            if index.info.adapts != "vectors":
                return vector
            if self.model is None:  # the base vector as it comes would be compared with adapted ones: refuse
                raise query.fail(f"{index.name} holds adapted vectors (mrl adapt) and this service was started "
                                 "without the adapter; start it with its model")
            return self.model.embed_batch(vector[None])[0]
        if kind == "id":
            try:
                return index.vector_of(query.id)
            except MRLError:
                what = "segment" if which == "videos" else "item"
                raise NotFound(f"id: unknown {what} id {query.id!r}") from None
        if kind == "clip" and which != "videos":
            raise query.fail('searches the videos; set "index": "videos"')
        if kind == "text" and which != "items":
            raise query.fail("searches the items index (a text adapter's documents)")
        model = self._model_for(query)
        if kind == "text":
            try:
                return model.text_encoder([check_query_text(query.text)])[0]
            except ValueError as e:
                raise query.fail(str(e).removeprefix("text: ")) from None
        if kind == "image":
            try:
                pixels = decode_image(query.image, model.item_shape)
            except ValueError as e:
                raise query.fail(str(e)) from None
            return model.embed_batch(pixels[None])[0]
        try:
            return embed_clip(query.clip, model.module, self.cfg, model.item_shape)
        except MRLError as e:
            raise query.fail(str(e).removeprefix(f"{query.clip}: ")) from None

    def _checked_vector(self, query: Query, full_dim: int) -> np.ndarray:
        vector = np.asarray(query.vector, dtype=np.float32)
        if vector.shape != (full_dim,):
            raise query.fail(f"expected {full_dim} values, got {vector.size}")
        if not np.isfinite(vector).all():
            raise query.fail("contains NaN or infinite values")
        return vector

    def _model_for(self, query: Query) -> Model:
        """The model, if it embeds what the query holds."""
        kind, model = query.kind, self.model
        if model is None:
            raise query.fail(f"this service was started without a model ({kind} search is off)")
        wants_text = kind == "text"
        if wants_text != (model.kind == "text"):
            other = "image or clip" if model.kind != "text" else "text"
            raise query.fail(f"the served index was built by {model.name} v{model.version}, which embeds "
                             f"{model.kind}, not {'text' if wants_text else 'images'}; search it by {other}, or by id")
        return model

    # ------------------------------------------------------------------------------------------------ searching

    def search(self, query: Query, k: int = 10, which: str = "items", *, one_per_video: bool | None = None,
               merge_gap_s: float | None = None, funnel: tuple[int, int] | None = None,
               exact: bool = False) -> Hits:
        """Funnel search with the served funnel; videos: coarse-to-fine moments (video, span, best frame time).
        `funnel` (d0, k0) and `exact`: the explorer (items, memory backend)."""
        if which not in INDEXES:
            raise QueryError(f"index: expected one of {', '.join(INDEXES)}, got {which!r}")
        if (funnel is not None or exact) and which != "items":
            raise QueryError("funnel, exact: the explorer searches the items index only")
        index = self.index(which)
        vector = self.embed(query, which)
        name = index.info.funnel.name()
        if which == "videos":
            results, timings = index.search(vector, k, one_per_video, merge_gap_s)
        elif funnel is not None:
            self._check_explorer(index, k, funnel)
            results, timings, name = index.explore(vector, k, *funnel)
        else:
            rows, timings = index.search(vector[None, :], k)
            results = rows[0]
        if which == "items":
            timings = timings | self._add_texts(results)
        hits = Hits(results, timings, index.name, index.info.model_version, name, vector, kind=query.kind)
        if exact:
            self._check_explorer(index, k)
            hits.exact = self._exact(index, vector, k, results)
        return hits

    def search_batch(self, queries: list[Query], k: int = 10) -> list[Hits | QueryError | NotFound]:
        """Several item searches with the served funnel in one index call: each answer is what `search` gives for that
        query alone (same hits, same order), or its QueryError / NotFound. A service coalesces concurrent requests
        with it: FAISS and the re-rank cost less per query in a batch, and the Python around them is paid once.
        Timings are the batch's (what each query waited for the index)."""
        index = self.index("items")
        answers: list[Hits | QueryError | NotFound | None] = [None] * len(queries)
        vectors, positions = [], []
        for i, query in enumerate(queries):
            try:
                vectors.append(self.embed(query))
                positions.append(i)
            except (QueryError, NotFound) as e:
                answers[i] = e
        if vectors:
            rows, timings = index.search(np.stack(vectors), k)
            name = index.info.funnel.name()
            for i, vector, results in zip(positions, vectors, rows):
                answers[i] = Hits(results, timings | self._add_texts(results), index.name, index.info.model_version,
                                  name, vector, kind=queries[i].kind)
        return answers

    def _add_texts(self, results: list[dict]) -> dict[str, float]:
        """Each hit with its document's text, in a text collection; the time it took."""
        if self.texts is None or not self.texts.stored:
            return {}
        started = time.perf_counter()
        self.texts.add_to(results)
        return {"texts": 1000 * (time.perf_counter() - started)}

    def _exact(self, index, vector: np.ndarray, k: int, results: list[dict]) -> dict:
        truth, ms = index.exact(vector, k)
        if self.texts is not None:
            self.texts.add_to(truth)
        found = {h["id"] for h in results}
        return {"results": truth, "ms": ms, "recall": sum(h["id"] in found for h in truth) / max(1, len(truth))}

    def explorer_ready(self) -> bool:
        return bool(self.cfg.retrieval.explorer and self.items is not None and hasattr(self.items, "explore"))

    def _check_explorer(self, index, k: int, funnel: tuple[int, int] | None = None) -> None:
        if not self.explorer_ready():
            raise QueryError("funnel, exact: the explorer needs the memory backend (retrieval.serve_backend) and "
                             "retrieval.explorer: true")
        if funnel is not None:
            d0, k0 = funnel
            if d0 not in index.info.nesting_dims:
                raise QueryError(f"funnel.d0: {d0} is not one of the model's nesting dims {index.info.nesting_dims}")
            if not k <= k0 <= MAX_K0:
                raise QueryError(f"funnel.k0: must be between k ({k}) and {MAX_K0}, got {k0}")

    # ----------------------------------------------------------------------------------- media and description

    def item_thumbnail(self, item_id: str) -> bytes:
        self.index("items")
        try:
            return self.thumbnails.png(item_id)
        except MRLError as e:
            raise NotFound(str(e)) from None

    def segment_thumbnail(self, segment_id: str) -> bytes:
        try:
            return self.index("videos").thumbnail(segment_id)
        except NotFound:
            raise
        except MRLError:
            raise NotFound(f"unknown segment id {segment_id!r}") from None

    def video_file(self, video_id: str, root: str | Path | None = None) -> Path:
        try:
            return self.index("videos").video_file(video_id, root)
        except NotFound:
            raise
        except MRLError as e:
            raise NotFound(str(e)) from None

    def describe(self, videos_dir: str | Path | None = None) -> dict:
        """What is served: collections, model version, funnels, backends (the service's /readyz)."""
        out = {}
        if self.items is not None:
            out |= describe_index(self.items) | {
                "thumbnails": self.thumbnails.stored, "explorer": self.explorer_ready(),
                "text_search": self.model is not None and self.model.text_encoder is not None}
        if self.videos is not None:
            out["videos"] = describe_index(self.videos) | {"player": bool(videos_dir or self.videos.root)}
        return out

    def close(self) -> None:
        self.client.close()


def describe_index(index) -> dict:
    funnel = getattr(index, "funnel", index)
    out = {"collection": index.name, "model_version": index.info.model_version, "funnel": index.info.funnel.name(),
           "backend": type(funnel).__name__, "nesting_dims": index.info.nesting_dims, "k": index.info.k,
           "d0": index.info.funnel.d0, "k0": index.info.funnel.k0}
    if hasattr(funnel, "bytes_per_item"):  # the memory backend: what one item costs this process
        out |= {"items": len(funnel.ids), "bytes_per_item": round(funnel.bytes_per_item())}
    return out

