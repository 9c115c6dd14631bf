"""Reading config files: YAML or JSON, a named section of a run file, unknown fields named."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from bioxlstm.errors import ConfigError


def check_fields(cls: type, data: Any, what: str) -> None:
    """Raise ConfigError unless `data` is a mapping whose keys are all fields of dataclass `cls`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} config must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - known))
    if unknown:
        raise ConfigError(f"unknown {what} config field(s) {unknown}; known fields: {sorted(known)}")


def read_config_file(path: str | Path, section: str) -> Any:
    """A YAML/JSON file's content, or its `section:` mapping when it has one (run files hold both)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"config file {path} is not valid YAML: {reason}") from None
    if isinstance(data, dict) and section in data:
        data = data[section]
    return data
