"""Configs are data: YAML/JSON files validated into typed dataclasses (one schema per concept).

Loading rejects unknown or mistyped keys by name ("unknown key 'widht' in model; did you mean 'width'?"),
so a typo fails at start instead of silently training the default. A schema may define a classmethod
``migrate(data, where) -> data`` that rewrites what older files carry (a setting that moved or retired)
before the check; a parent's runs before its sections are built.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config that does not fit its schema; the message names the key."""


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a valid {annotation}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{where}: {value!r} must be one of {list(typing.get_args(annotation))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        checked = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        return {_check_value(k, key_type, f"{where} (a key)"): _check_value(v, value_type, f"{where}.{k}")
                for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation in (bool, str):
        if not isinstance(value, annotation):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    if hasattr(cls, "migrate"):
        data = cls.migrate(data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(sorted(fields))})"
            raise ConfigError(f"unknown key '{key}' in {where}{hint}")
        values[key] = _check_value(value, hints[key], f"{where}.{key}")
    try:
        config = cls(**values)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    if hasattr(config, "validate"):
        config.validate()
    return config


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def load_config(source: str | Path | dict, cls: type[T], stage: str) -> T:
    """A config from a dict, a YAML/JSON path, or a bundled name (``mar3d/configs/<stage>/<name>.yaml``)."""
    if isinstance(source, dict):
        return from_dict(cls, source, stage)
    path = Path(source)
    if not path.exists() and (CONFIG_DIR / stage / f"{source}.yaml").exists():
        path = CONFIG_DIR / stage / f"{source}.yaml"
    if not path.exists():
        bundled = sorted(p.stem for p in (CONFIG_DIR / stage).glob("*.yaml"))
        raise ConfigError(f"no config file '{source}' (bundled {stage} configs: {', '.join(bundled)})")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML/JSON: {e}") from None
    return from_dict(cls, data or {}, f"{path.name}")
