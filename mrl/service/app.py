"""The search service: funnel search over the promoted Milvus index, behind FastAPI.

POST /search (by vector, item id or image, or by text where the served model is a text adapter; with `"index":
"videos"` also by clip or segment id, over the video segments index: moments with video id, span, best frame time
and a thumbnail URL; with `funnel`/`exact` the explorer: any shortlist d0@k0 and exact search side by side),
GET /items/{id}/thumbnail and /thumbnails/{segment_id} (PNGs stored at promotion), GET /videos/{video_id} (an indexed
video file from the ingested folder, with HTTP range requests: the search page's player), the search page at /, /docs
and /redoc (served offline), /healthz, /readyz, /metrics (Prometheus), and POST /admin/reload (bearer token from
$MRL_ADMIN_TOKEN; disabled when unset). Query embeddings go to a rolling window of .npy files for drift monitoring;
a sampled share of item searches is re-run as exact search in the background, its recall@k on /metrics and beside
that window (mrl.service.audit).

The searching itself is the library's `mrl.search.Searcher`; this module holds the routes, the metrics, the query
log and following the aliases.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import os
import threading
import time
from pathlib import Path
from urllib.parse import quote

import faiss
import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from mrl.config import Config
from mrl.errors import MRLError
from mrl.search import NotFound, QueryError, Searcher
from mrl.service.audit import AuditLog, AuditMetrics, Auditor
from mrl.service.batching import MicroBatcher
from mrl.service.query_log import QueryLog
from mrl.service.requests import SearchRequest, library_query, plain_query

ADMIN_TOKEN_ENV = "MRL_ADMIN_TOKEN"
PAGE = Path(__file__).parent.parent / "web" / "index.html"  # the search page at /
VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
               ".mov": "video/quicktime", ".avi": "video/x-msvideo"}  # Content-Type of GET /videos/{id} by suffix
CACHED = {"Cache-Control": "max-age=3600"}


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("mrl_search_requests_total", "search requests", ["kind", "status"],
                                registry=self.registry)
        self.latency = Histogram("mrl_search_latency_seconds", "search latency", ["stage"], registry=self.registry)
        self.failures = Counter("mrl_search_failures_total", "searches that failed unexpectedly (503)", ["error"],
                                registry=self.registry)
        self.reloads = Counter("mrl_index_reloads_total", "index loads after the start", ["trigger", "status"],
                               registry=self.registry)
        self.batch_size = Histogram("mrl_search_batch_size", "searches answered by one index call (micro-batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)


class Service:
    """What the routes share: the Searcher (replaced whole when the aliases move), the metrics and the query logs."""

    def __init__(self, cfg: Config, milvus_uri: str | None, tracking_uri: str | None, query_log_dir: str | Path,
                 load_model: bool, client, query_log_max_age_s: float, videos_dir: str | Path | None,
                 max_batch: int = 64):
        self.cfg, self.milvus_uri, self.tracking_uri = cfg, milvus_uri, tracking_uri
        # Concurrent light item searches answered together (1: each alone, on the event loop).
        self.batcher = MicroBatcher(self.answer_batch, max_batch) if max_batch > 1 else None
        self.load_model, self.client, self.videos_dir = load_model, client, videos_dir
        self.metrics = Metrics()
        self.query_log = QueryLog(Path(query_log_dir), max_age_s=query_log_max_age_s)
        # Video queries (frames, clips) come from another distribution than the items catalogue: a window of their
        # own, so that `mrl drift` on the query log compares item queries with the items' reference.
        self.video_query_log = QueryLog(Path(query_log_dir) / "videos", max_age_s=query_log_max_age_s)
        # The live recall audit (mrl.service.audit): a sampled share of item searches re-run exactly, off the request
        # path; its rows go beside the items query log, for `mrl drift`.
        fraction = cfg.retrieval.audit_fraction
        self.auditor = Auditor(fraction, AuditMetrics(self.metrics.registry), AuditLog(
            Path(query_log_dir), max_age_s=query_log_max_age_s)) if fraction > 0 else None
        self.current: Searcher | None = None
        self._lock = threading.Lock()

    def reload(self) -> Searcher:
        searcher = Searcher.open(self.cfg, self.milvus_uri, self.tracking_uri, self.load_model, self.client,
                                 log=lambda line: print(line, flush=True))
        with self._lock:
            self.current = searcher
        # What is loaded now lives as long as the service: out of the garbage collector's sight, so that its full
        # collections (which walk every tracked object: torch, pymilvus, the index's ids) stop pausing searches.
        gc.freeze()
        return searcher

    def searcher(self) -> Searcher:
        """The Searcher, loaded on first use; 503 while no index can be loaded."""
        if self.current is None:
            try:
                return self.reload()
            except MRLError as e:
                raise HTTPException(503, f"index not ready: {e}") from None
        return self.current

    def follow_aliases(self) -> None:
        """Reload when an alias points elsewhere than what is served. On failure keep serving (and retry next time):
        a half-loaded index never replaces a working one."""
        if self.current is None:
            with contextlib.suppress(MRLError):
                self.reload()
            return
        have, want = self.current.collections(), self.current.alias_targets()
        if want == have:
            return
        try:
            self.reload()
        except Exception as e:  # MRLError, or Milvus errors while the new collection is read
            self.metrics.reloads.labels("alias", "failed").inc()
            print(f"alias moved to {want}; loading it failed, still serving {have}: {e}", flush=True)
            return
        self.metrics.reloads.labels("alias", "ok").inc()
        print(f"followed the aliases: now serving {want} (was {have})", flush=True)

    def flush_logs(self, stale_only: bool) -> None:
        for log in (self.query_log, self.video_query_log):
            log.flush_if_stale() if stale_only else log.flush()
        if self.auditor is not None:
            self.auditor.log.flush(stale_only)

    def audit_status(self) -> dict:
        return self.auditor.describe() if self.auditor is not None else {"fraction": 0.0}

    def answer(self, searcher: Searcher, req: SearchRequest) -> dict:
        """One search, counted and timed; its query embedding logged when it came from outside."""
        started = time.perf_counter()
        try:
            with library_query(req) as query:
                funnel = (req.funnel.d0, req.funnel.k0) if req.funnel is not None else None
                hits = searcher.search(query, req.k, req.index, one_per_video=req.one_per_video,
                                       merge_gap_s=req.merge_gap_s, funnel=funnel, exact=req.exact)
        except (NotFound, QueryError) as e:
            raise self.refused(req, e) from None
        return self.record(searcher, req, hits, started)

    def answer_batch(self, _key, batch: list[tuple[Searcher, SearchRequest]]) -> list[dict | HTTPException]:
        """Light item searches of one Searcher and one k, in one index call (`MicroBatcher`): per request, what
        `answer` gives, or the HTTPException it raises."""
        started, searcher = time.perf_counter(), batch[0][0]
        reqs = [req for _, req in batch]
        self.metrics.batch_size.observe(len(reqs))
        try:
            queries = [plain_query(req) for req in reqs]  # light requests: only k can be wrong, and it is one k
        except QueryError as e:
            return [self.refused(req, e) for req in reqs]
        return [self.refused(req, hits) if isinstance(hits, Exception) else self.record(searcher, req, hits, started)
                for req, hits in zip(reqs, searcher.search_batch(queries, reqs[0].k))]

    def refused(self, req: SearchRequest, e: NotFound | QueryError) -> HTTPException:
        status = 404 if isinstance(e, NotFound) else 422
        self.metrics.requests.labels(req.kind, str(status)).inc()
        return HTTPException(status, str(e))

    def record(self, searcher: Searcher, req: SearchRequest, hits, started: float) -> dict:
        """A search's answer counted and timed; its query embedding logged (and maybe audited) when it came from
        outside."""
        if req.index == "videos":
            for h in hits.results:
                h["thumbnail_url"] = f"/thumbnails/{quote(h['segment_id'])}"
        # Logged: external queries only. A search by id repeats a catalogue vector and an explorer run (funnel
        # given) repeats the page's last query; either would dilute the drift window.
        if req.kind != "id" and req.funnel is None:
            (self.video_query_log if req.index == "videos" else self.query_log).append(hits.query[None, :])
            if self.auditor is not None and req.index == "items":  # queued (or dropped), never waited for
                self.auditor.offer(searcher.items, hits.query, [h["id"] for h in hits.results], req.k,
                                   hits.collection, hits.funnel)
        for stage, ms in hits.timings_ms.items():
            self.metrics.latency.labels(stage).observe(ms / 1000)
        total = time.perf_counter() - started
        self.metrics.latency.labels("total").observe(total)
        self.metrics.requests.labels(req.kind, "200").inc()
        return hits.to_dict() | {"timings_ms": hits.timings_ms | {"total": 1000 * total}}


def create_app(cfg: Config, milvus_uri: str | None = None, tracking_uri: str | None = None,
               query_log_dir: str | Path = "artifacts/query_log", load_model: bool = True, client=None,
               query_log_max_age_s: float = 60.0, reload_interval_s: float = 30.0,
               videos_dir: str | Path | None = None, max_batch: int = 64) -> FastAPI:
    """The service. Every `reload_interval_s` (0: never) it checks the Milvus aliases and, when a promotion or
    rollback moved one, loads the new collection while still serving the old one, then swaps them. `videos_dir`:
    serve the indexed videos (GET /videos/{id}) from this folder instead of the one recorded at ingest. `max_batch`:
    at most this many concurrent item searches answered by one index call (mrl.service.batching; 1: no batching)."""
    faiss.omp_set_num_threads(1)  # one query per request: parallelism comes from requests, not OpenMP threads
    service = Service(cfg, milvus_uri, tracking_uri, query_log_dir, load_model, client, query_log_max_age_s,
                      videos_dir, max_batch)
    # Swagger UI and ReDoc from the fastapi-offline package, not a CDN: /docs and /redoc work without internet.
    app = FastAPIOffline(title="mrl search", description=__doc__, lifespan=_lifespan(service, reload_interval_s,
                                                                                     query_log_max_age_s))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request, exc: RequestValidationError):
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    _add_status_routes(app, service)
    _add_search_route(app, service)
    _document_search_body(app)
    _add_media_routes(app, service)
    _add_admin_routes(app, service)
    return app


def _lifespan(service: Service, reload_interval_s: float, query_log_max_age_s: float):
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        with contextlib.suppress(MRLError):  # no index yet: /readyz says 503 and the next request retries
            service.reload()

        async def follow():
            while True:
                await asyncio.sleep(reload_interval_s)
                with contextlib.suppress(Exception):  # logged and counted inside; never end the loop
                    await run_in_threadpool(service.follow_aliases)

        async def flush_stale_logs():
            while True:
                await asyncio.sleep(min(5.0, query_log_max_age_s))
                service.flush_logs(stale_only=True)

        tasks = [asyncio.create_task(flush_stale_logs())]
        if reload_interval_s > 0:
            tasks.append(asyncio.create_task(follow()))
        yield
        for task in tasks:
            task.cancel()
        if service.batcher is not None:
            service.batcher.close()
        service.flush_logs(stale_only=False)  # keep the last partial window on shutdown
        if service.auditor is not None:
            service.auditor.stop()  # audits what is queued (for up to 10 s), writes the last rows

    return lifespan


def _add_status_routes(app: FastAPI, service: Service) -> None:
    page = PAGE.read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def search_page():
        return page

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        searcher = service.searcher()
        first = searcher.items or searcher.videos
        try:
            first.client.describe_collection(first.name)
        except Exception as e:
            raise HTTPException(503, f"Milvus not reachable: {type(e).__name__}") from None
        return {"status": "ready"} | searcher.describe(service.videos_dir) | {"audit": service.audit_status()}

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_search_route(app: FastAPI, service: Service) -> None:
    # The body is parsed and validated by pydantic-core straight from the JSON bytes, not by FastAPI's dependency
    # machinery (json.loads, then validation of the Python objects: ~0.3 ms of a ~1 ms request at 50 clients,
    # measured); the schema is still documented at /docs (`_document_search_body`).
    @app.post("/search", responses={404: {"description": "unknown id, or no index of that kind served"},
                                     422: {"description": "invalid body or query (the detail says which field)"},
                                     503: {"description": "index not ready, or changing: retry"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/SearchRequest"}}}}})
    async def search(request: Request):
        try:
            req = SearchRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return JSONResponse({"detail": validation_errors(e.errors(), ("body",))}, status_code=422)
        try:
            searcher = service.current or await run_in_threadpool(service.searcher)
            index = searcher.videos if req.index == "videos" else searcher.items
            if getattr(getattr(index, "funnel", index), "in_process", False) and req.light:
                # The memory backend answers in about a millisecond of CPU. Concurrent ones are coalesced into one
                # index call on one search thread (mrl.service.batching); without batching, run here, in arrival
                # order: 40 pool threads contending for the GIL turned 50 concurrent clients into multi-second tails.
                if service.batcher is not None and req.index == "items":
                    return json_response(await service.batcher.submit((id(searcher), req.k), (searcher, req)))
                return json_response(service.answer(searcher, req))
            return json_response(await run_in_threadpool(service.answer, searcher, req))  # Milvus, encoding
        except HTTPException:
            raise
        except Exception as e:  # e.g. a collection dropped under a replica that has not followed the alias yet
            service.metrics.failures.labels(type(e).__name__).inc()
            reason = (str(e).splitlines() or [""])[0][:200]
            raise HTTPException(503, f"search failed ({type(e).__name__}: {reason}); the index may be changing, "
                                     "retry") from None


def json_response(body: dict) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def validation_errors(errors: list[dict], prefix: tuple = ()) -> list[dict]:
    """Pydantic's errors without the rejected input (FastAPI's default echoes it: a base64 image or clip would come
    back whole), located as FastAPI locates them."""
    return [{k: v for k, v in e.items() if k not in ("input", "ctx", "url")} | {"loc": [*prefix, *e["loc"]]}
            for e in errors]


def _document_search_body(app: FastAPI) -> None:
    """POST /search's body schema in the OpenAPI document (the route reads the body itself, so FastAPI does not)."""
    default = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = default()
            body = SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(body.pop("$defs", {}))
            schemas["SearchRequest"] = body
        return app.openapi_schema

    app.openapi = openapi


def _add_media_routes(app: FastAPI, service: Service) -> None:
    @app.get("/thumbnails/{segment_id:path}", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the segment's thumbnail"}})
    def thumbnail(segment_id: str):
        try:
            png = service.searcher().segment_thumbnail(segment_id)
        except NotFound as e:
            raise HTTPException(404, str(e)) from None
        return Response(png, media_type="image/png", headers=CACHED)

    @app.get("/videos/{video_id:path}", response_class=Response,
             responses={200: {"content": {t: {} for t in sorted(set(VIDEO_TYPES.values()))},
                              "description": "the video file (206 with a Range header)"},
                        206: {"description": "the requested byte range"}, 416: {"description": "range not satisfiable"}})
    @app.head("/videos/{video_id:path}", include_in_schema=False)
    def video(video_id: str):
        """An indexed video from the ingested folder, with HTTP range requests (what a `<video>` element asks for).
        Only the served video index's videos, and only files inside that folder: anything else is a 404."""
        try:
            path = service.searcher().video_file(video_id, service.videos_dir)
        except NotFound as e:
            raise HTTPException(404, str(e)) from None
        # Starlette's FileResponse answers Range requests itself: 206 with Content-Range, 416 past the end.
        return FileResponse(path, media_type=VIDEO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                            headers=CACHED)

    @app.get("/items/{item_id:path}/thumbnail", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the item's thumbnail, stored at promotion"}})
    def item_thumbnail(item_id: str):
        try:
            png = service.searcher().item_thumbnail(item_id)
        except NotFound as e:
            raise HTTPException(404, str(e)) from None
        return Response(png, media_type="image/png", headers=CACHED)


def _add_admin_routes(app: FastAPI, service: Service) -> None:
    def require_admin(authorization: str | None = Header(None)):
        token = os.environ.get(ADMIN_TOKEN_ENV)
        if not token:
            raise HTTPException(403, f"admin calls are disabled: set {ADMIN_TOKEN_ENV} to enable them")
        if not authorization or not hmac.compare_digest(authorization, f"Bearer {token}"):
            raise HTTPException(401, "admin calls need 'Authorization: Bearer <token>'")

    @app.post("/admin/reload", dependencies=[Depends(require_admin)])
    def admin_reload():
        try:
            searcher = service.reload()
        except MRLError as e:
            service.metrics.reloads.labels("admin", "failed").inc()
            raise HTTPException(503, f"reload failed, still serving the previous index: {e}") from None
        service.metrics.reloads.labels("admin", "ok").inc()
        items, videos = searcher.collections()
        return {"collection": items or videos, "model_version": searcher.model_version} | (
            {"videos": videos} if videos else {})
