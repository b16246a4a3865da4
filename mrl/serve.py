"""The search service: funnel search over the promoted Milvus index, behind FastAPI.

POST /search (by vector, item id or image, or by text where the served model is a text adapter; with `"index":
"videos"` also by clip or segment id, over the video segments index: moments with video id, span, best frame time
and a thumbnail URL; with `funnel`/`exact` the explorer: any shortlist d0@k0 and exact search side by side),
GET /items/{id}/thumbnail and /thumbnails/{segment_id} (PNGs stored at promotion), GET /videos/{video_id} (an indexed
video file from the ingested folder, with HTTP range requests: the search page's player), the search page at /, /docs
and /redoc (served offline), /healthz, /readyz, /metrics (Prometheus), and POST /admin/reload (bearer token from
$MRL_ADMIN_TOKEN; disabled when unset). Query embeddings go to a rolling window of .npy files for drift monitoring.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import io
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from mrl.config import Config
from mrl.errors import MRLError

ADMIN_TOKEN_ENV = "MRL_ADMIN_TOKEN"
MAX_K = 100
MAX_K0 = 10_000
PAGE = Path(__file__).parent / "web" / "index.html"  # the search page at /
QUERY_KINDS = ("vector", "id", "image", "clip", "text")  # what a search request can search with (exactly one)
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
               ".mov": "video/quicktime", ".avi": "video/x-msvideo"}  # Content-Type of GET /videos/{id} by suffix


class FunnelOverride(BaseModel):
    d0: int = Field(description="shortlist prefix: one of the model's nesting dims")
    k0: int = Field(description=f"shortlist size, k..{MAX_K0}")


class SearchRequest(BaseModel):
    vector: list[float] | None = Field(None, description="a full-dim query embedding")
    id: str | None = Field(None, description="search with this indexed item's (or video segment's) embedding")
    image: str | None = Field(None, description="base64-encoded image, embedded with the served model")
    text: str | None = Field(None, description="query text (a text adapter's index): embedded by the adapter's base "
                                               "sentence encoder, then the adapter")
    clip: str | None = Field(None, description="base64-encoded short video (index: videos), its frames embedded and "
                                               "pooled like a segment")
    index: Literal["items", "videos"] = Field("items", description="items, or videos: moments in the video index")
    k: int = Field(10, description=f"results to return, 1..{MAX_K}")
    one_per_video: bool | None = Field(None, description="videos: at most one hit per video [video.one_per_video]")
    merge_gap_s: float | None = Field(None, ge=0, description="videos: merge hits of one video less than this many "
                                                              "seconds apart [video.merge_gap_s]")
    funnel: FunnelOverride | None = Field(None, description="explorer (items, memory backend): search with this "
                                                            "shortlist instead of the served funnel; not logged")
    exact: bool = Field(False, description="explorer: also return exact full-dim top-k, its time and the recall")

    @model_validator(mode="after")
    def _exactly_one_query(self) -> SearchRequest:
        given = [name for name in QUERY_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(QUERY_KINDS)} (got {given or 'none'})")
        if self.clip is not None and self.index != "videos":
            raise ValueError('clip: searches the videos; set "index": "videos"')
        if self.text is not None and self.index != "items":
            raise ValueError("text: searches the items index (a text adapter's documents)")
        if (self.funnel is not None or self.exact) and self.index != "items":
            raise ValueError("funnel, exact: the explorer searches the items index only")
        return self


class QueryLog:
    """Rolling window of query embeddings: files of up to `rows_per_file` rows, the newest `max_files` kept. A partial
    file is also written once its oldest row is `max_age_s` old (checked on every append, and every few seconds by
    the service), so a quiet replica still produces a window and a killed one loses at most that much."""

    def __init__(self, directory: Path, rows_per_file: int = 1000, max_files: int = 20, max_age_s: float = 60.0):
        self.directory, self.rows_per_file, self.max_files, self.max_age_s = directory, rows_per_file, max_files, max_age_s
        self._buffer: list[np.ndarray] = []
        self._first_at = 0.0  # monotonic time of the oldest buffered row
        self._lock = threading.Lock()

    def append(self, vectors: np.ndarray) -> None:
        with self._lock:
            if not self._buffer:
                self._first_at = time.monotonic()
            self._buffer.extend(np.atleast_2d(vectors).astype(np.float32))
            if len(self._buffer) >= self.rows_per_file or self._stale():
                self._flush()

    def flush_if_stale(self) -> None:
        with self._lock:
            if self._stale():
                self._flush()

    def _stale(self) -> bool:
        return bool(self._buffer) and time.monotonic() - self._first_at >= self.max_age_s

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"queries-{time.time_ns()}.npy"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.stack(self._buffer))
        os.replace(tmp, path)
        self._buffer = []
        for old in sorted(self.directory.glob("queries-*.npy"))[: -self.max_files]:
            old.unlink(missing_ok=True)


@dataclass
class Served:
    index: object | None  # MemoryFunnelIndex or MilvusFunnelIndex (mrl.retrieval.serving); None: no items alias
    encoder: object | None  # torch module for image queries (None: image search disabled)
    item_shape: list[int]
    videos: object | None = None  # VideoIndex (mrl.video.search); None: no video alias
    thumbnails: object | None = None  # mrl.retrieval.milvus_index.Thumbnails of the items collection
    kind: str = ""  # what the served model embeds: images, vectors, text ("" without a model)
    text_encoder: object | None = None  # text adapters: mrl.text.search.TextQueryEncoder (query text -> embedding)
    texts: object | None = None  # mrl.text.search.DocumentTexts of the items collection (text collections)

    @property
    def model_version(self) -> str:
        return (self.index or self.videos).info.model_version


def _load(cfg: Config, milvus_uri: str | None, tracking_uri: str | None, load_model: bool, client=None,
          log=None) -> Served:
    """The items index and the video index, each where its alias exists (at least one must)."""
    from mrl.retrieval import milvus_index as mi
    from mrl.retrieval.serving import open_served_index
    from mrl.video.search import open_video_index

    client = client or mi.connect(milvus_uri)
    videos = None
    if mi.alias_target(client, cfg.video.collection_prefix) is not None:
        videos = open_video_index(cfg, milvus_uri, client, log)
    items_served = mi.alias_target(client, cfg.retrieval.collection_prefix) is not None
    index = open_served_index(cfg.retrieval, milvus_uri, client, log) if items_served or videos is None else None
    encoder, shape, kind, text_encoder = None, [], "", None
    if load_model:
        from mrl.champion import load_registered_model, resolve_champion

        champion = resolve_champion(cfg, tracking_uri, (index or videos).info.model_version)
        encoder, shape, kind = load_registered_model(champion.model_uri), champion.item_shape, champion.kind
        if kind == "text":  # the base sentence encoder is loaded once per process (mrl.text.encoder.load_encoder)
            from mrl.text.search import served_text_encoder

            text_encoder = served_text_encoder(cfg, tracking_uri, champion.run_id, encoder)
    thumbnails = mi.Thumbnails(client, index.name) if index is not None else None
    texts = None
    if index is not None:
        from mrl.text.search import DocumentTexts

        texts = DocumentTexts(client, index.name)
    return Served(index, encoder, shape, videos, thumbnails, kind, text_encoder, texts)


def decode_image(data: str, item_shape: list[int]) -> np.ndarray:
    """base64 image -> uint8 array of the model's item shape (C, H, W), prepared as ingest prepares images (EXIF
    orientation, mode, shorter side resized and centre cropped); ValueError if undecodable."""
    from PIL import Image, UnidentifiedImageError

    from mrl.data.images import model_pixels

    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return model_pixels(img, item_shape[0], item_shape[-1])
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"image: not a decodable base64 image ({type(e).__name__})") from None


def create_app(cfg: Config, milvus_uri: str | None = None, tracking_uri: str | None = None,
               query_log_dir: str | Path = "artifacts/query_log", load_model: bool = True, client=None,
               query_log_max_age_s: float = 60.0, reload_interval_s: float = 30.0,
               videos_dir: str | Path | None = None) -> FastAPI:
    """The service. Every `reload_interval_s` (0: never) it checks the Milvus aliases and, when a promotion or
    rollback moved one, loads the new collection while still serving the old one, then swaps them. `videos_dir`:
    serve the indexed videos (GET /videos/{id}) from this folder instead of the one recorded at ingest."""
    import faiss

    from mrl.retrieval import milvus_index as mi

    faiss.omp_set_num_threads(1)  # one query per request: parallelism comes from requests, not OpenMP threads
    registry = CollectorRegistry()
    requests = Counter("mrl_search_requests_total", "search requests", ["kind", "status"], registry=registry)
    latency = Histogram("mrl_search_latency_seconds", "search latency", ["stage"], registry=registry)
    failures = Counter("mrl_search_failures_total", "searches that failed unexpectedly (503)", ["error"],
                       registry=registry)
    reloads = Counter("mrl_index_reloads_total", "index loads after the start", ["trigger", "status"], registry=registry)
    query_log = QueryLog(Path(query_log_dir), max_age_s=query_log_max_age_s)
    # Video queries (frames, clips) come from another distribution than the items catalogue: a window of their own,
    # so that `mrl drift` on the query log compares item queries with the items' reference.
    video_query_log = QueryLog(Path(query_log_dir) / "videos", max_age_s=query_log_max_age_s)
    state: dict[str, Served | None] = {"served": None}
    lock = threading.Lock()

    def log(line: str) -> None:
        print(line, flush=True)

    def reload() -> Served:
        served = _load(cfg, milvus_uri, tracking_uri, load_model, client, log=log)
        with lock:
            state["served"] = served
        return served

    def served() -> Served:
        if state["served"] is None:
            try:
                return reload()
            except MRLError as e:
                raise HTTPException(503, f"index not ready: {e}") from None
        return state["served"]

    def follow_aliases() -> None:
        """Reload when an alias points elsewhere than what is served. On failure keep serving (and retry next time):
        a half-loaded index never replaces a working one."""
        s = state["served"]
        if s is None:
            with contextlib.suppress(MRLError):
                reload()
            return
        c = (s.index or s.videos).client
        have = (s.index.name if s.index else None, s.videos.name if s.videos else None)
        want = (mi.alias_target(c, cfg.retrieval.collection_prefix), mi.alias_target(c, cfg.video.collection_prefix))
        if want == have:
            return
        try:
            reload()
        except Exception as e:  # MRLError, or Milvus errors while the new collection is read
            reloads.labels("alias", "failed").inc()
            log(f"alias moved to {want}; loading it failed, still serving {have}: {e}")
            return
        reloads.labels("alias", "ok").inc()
        log(f"followed the aliases: now serving {want} (was {have})")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        with contextlib.suppress(MRLError):  # no index yet: /readyz says 503 and the next request retries
            reload()

        async def follow():
            while True:
                await asyncio.sleep(reload_interval_s)
                with contextlib.suppress(Exception):  # logged and counted inside; never end the loop
                    await run_in_threadpool(follow_aliases)

        async def flush_stale_logs():
            while True:
                await asyncio.sleep(min(5.0, query_log_max_age_s))
                query_log.flush_if_stale()
                video_query_log.flush_if_stale()

        tasks = [asyncio.create_task(flush_stale_logs())]
        if reload_interval_s > 0:
            tasks.append(asyncio.create_task(follow()))
        yield
        for task in tasks:
            task.cancel()
        query_log.flush()  # keep the last partial window on shutdown
        video_query_log.flush()

    # Swagger UI and ReDoc from the fastapi-offline package, not a CDN: /docs and /redoc work without internet.
    app = FastAPIOffline(title="mrl search", description=__doc__, lifespan=lifespan)
    page = PAGE.read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def search_page():
        return page

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request, exc: RequestValidationError):
        # FastAPI's default echoes every rejected input: a base64 image or clip would come back whole.
        errors = [{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    def describe(index) -> dict:
        out = {"collection": index.name, "model_version": index.info.model_version, "funnel": index.info.funnel.name(),
               "backend": type(getattr(index, "funnel", index)).__name__, "nesting_dims": index.info.nesting_dims,
               "k": index.info.k, "d0": index.info.funnel.d0, "k0": index.info.funnel.k0}
        funnel = getattr(index, "funnel", index)
        if hasattr(funnel, "bytes_per_item"):  # the memory backend: what one item costs this process
            out |= {"items": len(funnel.ids), "bytes_per_item": round(funnel.bytes_per_item())}
        return out

    @app.get("/readyz")
    def readyz():
        s = served()
        first = s.index or s.videos
        try:
            first.client.describe_collection(first.name)
        except Exception as e:
            raise HTTPException(503, f"Milvus not reachable: {type(e).__name__}") from None
        ready = {"status": "ready"} | (describe(s.index) if s.index else {})
        if s.index is not None:
            ready |= {"thumbnails": s.thumbnails.stored, "explorer": explorer_ready(s.index),
                      "text_search": s.text_encoder is not None}
        if s.videos is not None:
            ready["videos"] = describe(s.videos) | {"player": bool(videos_dir or s.videos.root)}
        return ready

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/search")
    async def search(req: SearchRequest):
        try:
            return await answer(req)
        except HTTPException:
            raise
        except Exception as e:  # e.g. a collection dropped under a replica that has not followed the alias yet
            failures.labels(type(e).__name__).inc()
            reason = (str(e).splitlines() or [""])[0][:200]
            raise HTTPException(503, f"search failed ({type(e).__name__}: {reason}); the index may be changing, "
                                     "retry") from None

    async def answer(req: SearchRequest) -> JSONResponse:
        s = state["served"] or await run_in_threadpool(served)
        index = s.videos if req.index == "videos" else s.index
        light = req.image is None and req.clip is None and req.text is None and req.funnel is None and not req.exact
        if getattr(getattr(index, "funnel", index), "in_process", False) and light:
            # The memory backend answers in about a millisecond of CPU: run it here, in arrival order. Handing
            # it to the thread pool costs as much again, and 40 threads contending for the GIL (and FAISS's
            # OpenMP pool) turned 50 concurrent clients into multi-second tails.
            return JSONResponse(run_search(s, req))
        return JSONResponse(await run_in_threadpool(run_search, s, req))  # Milvus round trips, image encoding

    def embed(s: Served, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return s.encoder(torch.from_numpy(pixels)).numpy()

    def query_vector(s: Served, req: SearchRequest, index, kind: str) -> np.ndarray:
        full_dim = index.info.nesting_dims[-1]
        if kind == "vector":
            query = np.asarray(req.vector, dtype=np.float32)
            if query.shape != (full_dim,):
                raise ValueError(f"vector: expected {full_dim} values, got {len(req.vector)}")
            if not np.isfinite(query).all():
                raise ValueError("vector: contains NaN or infinite values")
            return query
        if kind == "id":
            try:
                return index.vector_of(req.id)
            except MRLError:
                requests.labels(kind, "404").inc()
                what = "segment" if req.index == "videos" else "item"
                raise HTTPException(404, f"id: unknown {what} id {req.id!r}") from None
        if s.encoder is None:
            raise ValueError(f"{kind}: this service was started without a model ({kind} search is off)")
        if kind == "text" and s.kind != "text":
            raise ValueError(f"text: the served model (v{index.info.model_version}) embeds {s.kind}, not text; search "
                             "it with an image, a vector or an id")
        if kind == "image" and s.kind == "text":
            raise ValueError(f"image: the served model (v{index.info.model_version}) is a text adapter; search it with "
                             "text, a vector or an id")
        if kind == "text":
            from mrl.text.search import check_query_text

            return s.text_encoder([check_query_text(req.text)])[0]
        if kind == "image":
            return embed(s, decode_image(req.image, s.item_shape)[None])[0]
        return clip_vector(s, req.clip)

    def clip_vector(s: Served, data: str) -> np.ndarray:
        from mrl.video.search import embed_clip

        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise ValueError("clip: not valid base64") from None
        with tempfile.NamedTemporaryFile(suffix=".clip") as f:
            f.write(raw)
            f.flush()
            try:
                return embed_clip(f.name, s.encoder, cfg, s.item_shape)
            except MRLError as e:
                raise ValueError(f"clip: {str(e).removeprefix(f.name + ': ')}") from None

    def run_search(s: Served, req: SearchRequest) -> dict:
        kind = next(name for name in QUERY_KINDS if getattr(req, name) is not None)
        started = time.perf_counter()
        index = s.videos if req.index == "videos" else s.index
        if index is None:
            requests.labels(kind, "404").inc()
            alias = cfg.video.collection_prefix if req.index == "videos" else cfg.retrieval.collection_prefix
            raise HTTPException(404, f"index: no {req.index} index is served (Milvus alias {alias} does not exist)")
        try:
            if not 1 <= req.k <= MAX_K:
                raise ValueError(f"k: must be between 1 and {MAX_K}, got {req.k}")
            query = query_vector(s, req, index, kind)
            funnel, extra = index.info.funnel.name(), {}
            if req.index == "videos":
                hits, timings = index.search(query, req.k, req.one_per_video, req.merge_gap_s)
                for h in hits:
                    h["thumbnail_url"] = f"/thumbnails/{quote(h['segment_id'])}"
            elif req.funnel is not None:
                check_explorer(index, req)
                hits, timings, funnel = index.explore(query, req.k, req.funnel.d0, req.funnel.k0)
            else:
                rows, timings = index.search(query[None, :], req.k)
                hits = rows[0]
            if req.index == "items" and s.texts is not None and s.texts.stored:
                started_texts = time.perf_counter()
                s.texts.add_to(hits)
                timings = timings | {"texts": 1000 * (time.perf_counter() - started_texts)}
            if req.exact:
                check_explorer(index, req)
                truth, exact_ms = index.exact(query, req.k)
                if s.texts is not None:
                    s.texts.add_to(truth)
                found = {h["id"] for h in hits}
                extra = {"exact": {"results": truth, "ms": exact_ms,
                                   "recall": sum(h["id"] in found for h in truth) / max(1, len(truth))}}
        except ValueError as e:
            requests.labels(kind, "422").inc()
            raise HTTPException(422, str(e)) from None
        # Logged: external queries only. A search by id repeats a catalogue vector and an explorer run (funnel
        # given) repeats the page's last query; either would dilute the drift window.
        if kind != "id" and req.funnel is None:
            (video_query_log if req.index == "videos" else query_log).append(query[None, :])
        for stage, ms in timings.items():
            latency.labels(stage).observe(ms / 1000)
        total = time.perf_counter() - started
        latency.labels("total").observe(total)
        requests.labels(kind, "200").inc()
        return {"results": hits, "timings_ms": timings | {"total": 1000 * total}, "collection": index.name,
                "model_version": index.info.model_version, "funnel": funnel} | extra

    def explorer_ready(index) -> bool:
        return cfg.retrieval.explorer and hasattr(index, "explore")

    def check_explorer(index, req: SearchRequest) -> None:
        """ValueError (a 422) unless the explorer may run this request."""
        if not explorer_ready(index):
            raise ValueError("funnel, exact: the explorer needs the memory backend (retrieval.serve_backend) and "
                             "retrieval.explorer: true")
        if req.funnel is not None:
            if req.funnel.d0 not in index.info.nesting_dims:
                raise ValueError(f"funnel.d0: {req.funnel.d0} is not one of the model's nesting dims "
                                 f"{index.info.nesting_dims}")
            if not req.k <= req.funnel.k0 <= MAX_K0:
                raise ValueError(f"funnel.k0: must be between k ({req.k}) and {MAX_K0}, got {req.funnel.k0}")

    @app.get("/thumbnails/{segment_id:path}", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the segment's thumbnail"}})
    def thumbnail(segment_id: str):
        s = served()
        if s.videos is None:
            raise HTTPException(404, f"no videos index is served (Milvus alias {cfg.video.collection_prefix} "
                                     "does not exist)")
        try:
            png = s.videos.thumbnail(segment_id)
        except MRLError:
            raise HTTPException(404, f"unknown segment id {segment_id!r}") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/videos/{video_id:path}", response_class=Response,
             responses={200: {"content": {t: {} for t in sorted(set(VIDEO_TYPES.values()))},
                              "description": "the video file (206 with a Range header)"},
                        206: {"description": "the requested byte range"}, 416: {"description": "range not satisfiable"}})
    @app.head("/videos/{video_id:path}", include_in_schema=False)
    def video(video_id: str):
        """An indexed video from the ingested folder, with HTTP range requests (what a `<video>` element asks for).
        Only the served video index's videos, and only files inside that folder: anything else is a 404."""
        s = served()
        if s.videos is None:
            raise HTTPException(404, f"no videos index is served (Milvus alias {cfg.video.collection_prefix} "
                                     "does not exist)")
        try:
            path = s.videos.video_file(video_id, videos_dir)
        except MRLError as e:
            raise HTTPException(404, str(e)) from None
        # Starlette's FileResponse answers Range requests itself: 206 with Content-Range, 416 past the end.
        return FileResponse(path, media_type=VIDEO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                            headers={"Cache-Control": "max-age=3600"})

    @app.get("/items/{item_id:path}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the item's thumbnail, stored at promotion"}})
    def item_thumbnail(item_id: str):
        s = served()
        if s.index is None:
            raise HTTPException(404, f"no items index is served (Milvus alias {cfg.retrieval.collection_prefix} "
                                     "does not exist)")
        try:
            png = s.thumbnails.png(item_id)
        except MRLError as e:
            raise HTTPException(404, str(e)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    def require_admin(authorization: str | None = Header(None)):
        token = os.environ.get(ADMIN_TOKEN_ENV)
        if not token:
            raise HTTPException(403, f"admin calls are disabled: set {ADMIN_TOKEN_ENV} to enable them")
        if not authorization or not hmac.compare_digest(authorization, f"Bearer {token}"):
            raise HTTPException(401, "admin calls need 'Authorization: Bearer <token>'")

    @app.post("/admin/reload", dependencies=[Depends(require_admin)])
    def admin_reload():
        try:
            s = reload()
        except MRLError as e:
            reloads.labels("admin", "failed").inc()
            raise HTTPException(503, f"reload failed, still serving the previous index: {e}") from None
        reloads.labels("admin", "ok").inc()
        return {"collection": (s.index or s.videos).name, "model_version": s.model_version} | (
            {"videos": s.videos.name} if s.videos else {})

    return app
