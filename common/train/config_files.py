"""Config files: YAML read strictly (``1e-3`` a float, a repeated key refused, one clear
error for a missing, damaged or oversized file) and written atomically with a digest line
that :func:`read_yaml` checks when asked (a run's saved ``config.yaml``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from common.io import FileRefused, read_text_file, write_text
from common.train.typed import ConfigError, Section, to_dict


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


_FLOAT = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    ch: [r for r in resolvers if r[0] != _FLOAT]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    # PyYAML lets a repeated key (a second ``train:`` section) silently replace the first
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                f"{seen[key] + 1}): merge the two into one"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
            |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


#: The largest config file read (a run's is a few kB).
MAX_CONFIG_BYTES = 2**20


def read_yaml(path: str | Path, *, verify: str | None = None) -> dict[str, Any]:
    """The top-level mapping of a config YAML file (``1e-3`` read as a float); a missing,
    unreadable or malformed file raises :class:`ConfigError` naming it.

    ``verify``: the file was written by :func:`save_config` and must match its digest
    line; the value is what the message tells the user to do when it does not.
    """
    path = Path(path)
    try:
        text = read_text_file(path, max_bytes=MAX_CONFIG_BYTES)
        if verify is not None:
            _check_digest(path, text, verify)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except FileRefused as e:
        raise ConfigError(f"config file refused: {e}; give a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {e.start}): save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"config file {str(path)!r}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys at the top level, "
            f"got {type(data).__name__}"
        )
    return dict(data)


def _check_digest(path: Path, text: str, fix: str) -> None:
    match = _DIGEST_LINE.search(text)
    if match is None:
        raise ConfigError(f"{path} has no checksum line (edited by hand?); {fix}")
    if _sha256(text[: match.start()]) != match.group(1):
        raise ConfigError(f"{path} is damaged or was edited (its checksum does not match); {fix}")


_DIGEST_LINE = re.compile(r"^# sha256: ([0-9a-f]{64})\n?\Z", re.M)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_config(cfg: Section, path: str | Path) -> None:
    """Writes ``to_dict(cfg)`` as YAML atomically (temp file, fsync, ``os.replace``), with
    a last comment line holding the digest of the rest, which ``read_yaml(path,
    verify=True)`` checks."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
    write_text(path, f"{text}# sha256: {_sha256(text)}\n")
