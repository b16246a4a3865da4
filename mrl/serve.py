"""The search service: funnel search over the promoted Milvus index, behind FastAPI.

POST /search (by vector, item id or image), GET /healthz, /readyz, /metrics (Prometheus), and
POST /admin/reload (bearer token from $MRL_ADMIN_TOKEN; disabled when unset). Query embeddings go to a
rolling window of .npy files for drift monitoring.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from mrl.config import Config
from mrl.errors import MRLError

ADMIN_TOKEN_ENV = "MRL_ADMIN_TOKEN"
MAX_K = 100


class SearchRequest(BaseModel):
    vector: list[float] | None = Field(None, description="a full-dim query embedding")
    id: str | None = Field(None, description="search with this indexed item's embedding")
    image: str | None = Field(None, description="base64-encoded image, embedded with the served model")
    k: int = Field(10, description=f"results to return, 1..{MAX_K}")

    @model_validator(mode="after")
    def _exactly_one_query(self) -> SearchRequest:
        given = [name for name in ("vector", "id", "image") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of vector, id, image (got {given or 'none'})")
        return self


class QueryLog:
    """Rolling window of query embeddings: files of up to `rows_per_file` rows, the newest `max_files` kept."""

    def __init__(self, directory: Path, rows_per_file: int = 1000, max_files: int = 20):
        self.directory, self.rows_per_file, self.max_files = directory, rows_per_file, max_files
        self._buffer: list[np.ndarray] = []
        self._lock = threading.Lock()

    def append(self, vectors: np.ndarray) -> None:
        with self._lock:
            self._buffer.extend(np.atleast_2d(vectors).astype(np.float32))
            if len(self._buffer) >= self.rows_per_file:
                self._flush()

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
    index: object  # MemoryFunnelIndex or MilvusFunnelIndex (mrl.retrieval.serving)
    encoder: object | None  # torch module for image queries (None: image search disabled)
    item_shape: list[int]


def _load(cfg: Config, milvus_uri: str | None, tracking_uri: str | None, load_model: bool, client=None,
          log=None) -> Served:
    from mrl.retrieval.serving import open_served_index

    index = open_served_index(cfg.retrieval, milvus_uri, client, log)
    encoder, shape = None, []
    if load_model:
        from mrl.promote import resolve_champion

        champion = resolve_champion(cfg, tracking_uri, index.info.model_version)
        import mlflow

        encoder, shape = mlflow.pytorch.load_model(champion.model_uri), champion.item_shape
    return Served(index, encoder, shape)


def decode_image(data: str, item_shape: list[int]) -> np.ndarray:
    """base64 image -> uint8 array of the model's item shape (C, H, W); ValueError if undecodable."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            channels, height, width = item_shape
            img = img.convert("L" if channels == 1 else "RGB").resize((width, height))
            arr = np.array(img, dtype=np.uint8)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"image: not a decodable base64 image ({type(e).__name__})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def create_app(cfg: Config, milvus_uri: str | None = None, tracking_uri: str | None = None,
               query_log_dir: str | Path = "artifacts/query_log", load_model: bool = True, client=None) -> FastAPI:
    import faiss

    faiss.omp_set_num_threads(1)  # one query per request: parallelism comes from requests, not OpenMP threads
    registry = CollectorRegistry()
    requests = Counter("mrl_search_requests_total", "search requests", ["kind", "status"], registry=registry)
    latency = Histogram("mrl_search_latency_seconds", "search latency", ["stage"], registry=registry)
    query_log = QueryLog(Path(query_log_dir))
    state: dict[str, Served | None] = {"served": None}
    lock = threading.Lock()

    def reload() -> Served:
        served = _load(cfg, milvus_uri, tracking_uri, load_model, client, log=lambda line: print(line, flush=True))
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

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        with contextlib.suppress(MRLError):  # no index yet: /readyz says 503 and the next request retries
            reload()
        yield
        query_log.flush()  # keep the last partial window on shutdown

    app = FastAPI(title="mrl search", description=__doc__, lifespan=lifespan)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        s = served()
        try:
            s.index.client.describe_collection(s.index.name)
        except Exception as e:
            raise HTTPException(503, f"Milvus not reachable: {type(e).__name__}") from None
        ready = {"status": "ready", "collection": s.index.name, "model_version": s.index.info.model_version,
                 "funnel": s.index.info.funnel.name(), "backend": type(s.index).__name__}
        if hasattr(s.index, "bytes_per_item"):  # the memory backend: what one item costs this process
            ready |= {"items": len(s.index.ids), "bytes_per_item": round(s.index.bytes_per_item())}
        return ready

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/search")
    async def search(req: SearchRequest):
        s = state["served"] or await run_in_threadpool(served)
        if getattr(s.index, "in_process", False) and req.image is None:
            # The memory backend answers in about a millisecond of CPU: run it here, in arrival order. Handing
            # it to the thread pool costs as much again, and 40 threads contending for the GIL (and FAISS's
            # OpenMP pool) turned 50 concurrent clients into multi-second tails.
            return JSONResponse(run_search(s, req))
        return JSONResponse(await run_in_threadpool(run_search, s, req))  # Milvus round trips, image encoding

    def run_search(s: Served, req: SearchRequest) -> dict:
        kind = "vector" if req.vector is not None else "id" if req.id is not None else "image"
        started = time.perf_counter()
        try:
            if not 1 <= req.k <= MAX_K:
                raise ValueError(f"k: must be between 1 and {MAX_K}, got {req.k}")
            full_dim = s.index.info.nesting_dims[-1]
            if kind == "vector":
                query = np.asarray(req.vector, dtype=np.float32)
                if query.shape != (full_dim,):
                    raise ValueError(f"vector: expected {full_dim} values, got {len(req.vector)}")
                if not np.isfinite(query).all():
                    raise ValueError("vector: contains NaN or infinite values")
            elif kind == "id":
                try:
                    query = s.index.vector_of(req.id)
                except MRLError:
                    requests.labels(kind, "404").inc()
                    raise HTTPException(404, f"id: unknown item id {req.id!r}") from None
            else:
                if s.encoder is None:
                    raise ValueError("image: this service was started without a model (image search is off)")
                import torch

                pixels = decode_image(req.image, s.item_shape)
                with torch.no_grad():
                    query = s.encoder(torch.from_numpy(pixels[None])).numpy()[0]
            hits, timings = s.index.search(query[None, :], req.k)
        except ValueError as e:
            requests.labels(kind, "422").inc()
            raise HTTPException(422, str(e)) from None
        query_log.append(query[None, :])
        for stage, ms in timings.items():
            latency.labels(stage).observe(ms / 1000)
        total = time.perf_counter() - started
        latency.labels("total").observe(total)
        requests.labels(kind, "200").inc()
        return {"results": hits[0], "timings_ms": timings | {"total": 1000 * total},
                "collection": s.index.name, "model_version": s.index.info.model_version,
                "funnel": s.index.info.funnel.name()}

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
            raise HTTPException(503, f"reload failed, still serving the previous index: {e}") from None
        return {"collection": s.index.name, "model_version": s.index.info.model_version}

    return app
