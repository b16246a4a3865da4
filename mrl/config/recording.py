"""The opt-in record of the params keys a command reads ($MRL_PARAMS_READ_LOG)."""

from __future__ import annotations

import atexit
import os
from typing import Any

from mrl.config.base import _Section
from mrl.config.schema import Config

# Opt-in record of the params keys a command reads, for tests/pipeline/test_dvc_params.py: with MRL_PARAMS_READ_LOG
# set to a file, every "section.key" read as an attribute of a config from `parse_params` (so `load_config`) is
# appended to that file, one a line, when the process exits. Not reads: keys the command line overrides (their value
# is not the file's), serializing the config (model_dump: the copy saved beside a model) and reads of a config rebuilt
# from a checkpoint (`config_from_dict`).
PARAMS_READ_LOG = "MRL_PARAMS_READ_LOG"
_reads: set[str] = set()
_recording_classes: dict[tuple[type[_Section], str, frozenset[str]], type[_Section]] = {}


def _recording_class(cls: type[_Section], section: str, overridden: frozenset[str]) -> type[_Section]:
    """A subclass of a section class (same name, fields and checks) that notes each of its fields read."""
    key = (cls, section, overridden)
    if key not in _recording_classes:
        recorded = frozenset(cls.model_fields) - overridden

        def __getattribute__(self, name: str):
            if name in recorded:
                _reads.add(f"{section}.{name}")
            return cls.__getattribute__(self, name)  # object's: sections define none of their own

        def __reduce__(self):  # pickles as the plain section: the class is not importable by name
            return _plain_section, (cls, dict(self), self.model_fields_set)

        _recording_classes[key] = type(cls.__name__, (cls,), {
            "__getattribute__": __getattribute__, "__reduce__": __reduce__, "__module__": cls.__module__,
            "__qualname__": cls.__qualname__})
    return _recording_classes[key]


def _plain_section(cls: type[_Section], values: dict[str, Any], fields_set: set[str]) -> _Section:
    return cls.model_construct(fields_set, **values)


def _recording(cfg: Config, overridden: set[str]) -> Config:
    """`cfg` with each section swapped for a recording copy (same values; isinstance holds); reads logged at exit."""
    if not _recording_classes:
        atexit.register(_write_reads, os.environ[PARAMS_READ_LOG])
    sections = {}
    for name in Config.model_fields:
        section = getattr(cfg, name)
        skip = frozenset(key.split(".", 1)[1] for key in overridden if key.startswith(f"{name}."))
        sections[name] = _recording_class(type(section), name, skip).model_construct(
            section.model_fields_set, **dict(section))
    return Config.model_construct(cfg.model_fields_set, **sections)


def _write_reads(path: str) -> None:
    if _reads:
        with open(path, "a") as f:
            f.write("".join(f"{key}\n" for key in sorted(_reads)))

