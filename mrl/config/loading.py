"""Reading params: YAML text to a validated Config, "section.key=value" overrides, one-line errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mrl.config.recording import PARAMS_READ_LOG, _recording
from mrl.config.schema import Config
from mrl.errors import MRLError


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 as a float (YAML 1.2), not as the string PyYAML's YAML 1.1 rules give."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _yaml(text: str):
    return yaml.load(text, Loader=_YamlLoader)


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    message = message.removeprefix("Value error, ")
    # Cross-field checks name their field at the start of the message ("nesting_dims: ..."): fold it into the key.
    field = re.match(r"^([\w.]+): ", message)
    if field:
        key = f"{key}.{field.group(1)}" if key else field.group(1)
        message = message[field.end():]
    where = f"{source}: {key}" if key else source
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {message}{more}"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise MRLError(_one_line(e, source)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply "section.key=value" overrides (value parsed as YAML) to a raw params mapping, in place."""
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise MRLError(f"{source}: override {item!r} must look like section.key=value")
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise MRLError(f"{source}: {parts[0]}: expected a mapping")
        section[parts[1]] = _yaml(value)
    return raw


def _raw_params(text: str, source: str) -> dict[str, Any]:
    try:
        raw = _yaml(text) or {}
    except yaml.YAMLError as e:
        raise MRLError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise MRLError(f"{source}: expected a mapping of sections at the top level")
    return raw


def parse_params(text: str, source: str = "params", overrides: list[str] = ()) -> Config:
    """Config from params.yaml text ("" gives the embedded defaults): how pipeline steps receive params."""
    cfg = config_from_dict(apply_overrides(_raw_params(text, source), list(overrides), source), source)
    if os.environ.get(PARAMS_READ_LOG):
        return _recording(cfg, {item.partition("=")[0].strip() for item in overrides})
    return cfg


def config_yaml(cfg: Config) -> str:
    """The resolved configuration as params.yaml text (overrides applied): what a front-end forwards to pipeline
    steps, so that `--set` reaches them (parse_params(config_yaml(cfg)) == cfg)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Load params.yaml (None: the embedded defaults), then apply "section.key=value" overrides."""
    if path is None:
        return parse_params("", "--set", overrides)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise MRLError(f"{path}: file not found") from None
    except OSError as e:
        raise MRLError(f"{path}: cannot read ({e.strerror})") from None
    return parse_params(text, str(path), overrides)
