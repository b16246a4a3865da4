"""The body of POST /search, and how it becomes a library `Query`."""

from __future__ import annotations

import base64
import binascii
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from mrl.search import MAX_K0, QUERY_KINDS, Query, QueryError

MAX_K = 100


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

    @property
    def kind(self) -> str:
        return next(name for name in QUERY_KINDS if getattr(self, name) is not None)

    @property
    def light(self) -> bool:
        """Answered in about a millisecond by the memory backend: nothing to decode or embed, no explorer."""
        return self.image is None and self.clip is None and self.text is None and self.funnel is None and not self.exact


def _base64(field: str, data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        raise QueryError(f"{field}: not valid base64") from None


def check_k(req: SearchRequest) -> None:
    if not 1 <= req.k <= MAX_K:
        raise QueryError(f"k: must be between 1 and {MAX_K}, got {req.k}")


def plain_query(req: SearchRequest) -> Query:
    """A request without a clip as a `Query` (QueryError on a bad k or bad base64)."""
    check_k(req)
    return Query(vector=req.vector, id=req.id, text=req.text,
                 image=None if req.image is None else _base64("image", req.image))


@contextlib.contextmanager
def library_query(req: SearchRequest) -> Iterator[Query]:
    """The request as a `Query` (QueryError on a bad k or bad base64); an uploaded clip lives in a temporary file
    (FFmpeg reads files) until the block ends."""
    if req.clip is None:
        yield plain_query(req)
        return
    check_k(req)
    raw = _base64("clip", req.clip)
    with tempfile.NamedTemporaryFile(suffix=".clip") as f:
        f.write(raw)
        f.flush()
        yield Query(clip=Path(f.name), label="clip")
