"""The base of every params section: strict types, unknown keys rejected, values frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    # strict: "8" is not 8; extra="forbid": an unknown key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
