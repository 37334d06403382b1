"""Typed configs: dataclasses <- nested mappings (YAML) <- ``key=value`` overrides.

The machinery behind :mod:`common.train.config` (which holds the schema). Every field has
a default; its ``metadata`` may hold ``help`` (one line), ``choices``, ``min`` / ``max``
(inclusive), ``gt`` / ``lt`` (exclusive) and ``nonempty`` (lists); for a list field the
bounds and choices apply to each element. Float values must be finite. A section may
define ``check_section(self, prefix)`` for checks across its fields. Types are resolved
on the concrete class with ``typing.get_type_hints``, so domains subclass sections to add
keys.

``from_dict`` and ``apply_overrides`` check keys and types; ``validate`` checks bounds,
choices and the sections' own checks. Every problem is a ``ConfigError`` whose message is
meant for the user as is.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import math
import re
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from common.errors import UserError
from common.io import FileRefused, read_text_file, write_text

C = TypeVar("C")


class ConfigError(UserError, ValueError):
    """A configuration problem; the message is shown to the user without a traceback."""


def keyfield(default: Any = None, help: str = "", *, factory: Any = None, **checks: Any) -> Any:
    """A dataclass field with ``help`` and checks (choices, min, max, gt, lt, nonempty)."""
    meta = {"help": help, **checks}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------- types


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config field type {tp!r}")
        return True, args[0]
    return False, tp


_NAMES = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _describe(tp: Any) -> str:
    optional, tp = _unwrap_optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if is_section(tp):
        text = "a section (a mapping of keys)"
    elif origin is list:
        text = f"a list of {_PLURALS.get(args[0], 'values')}"
    elif origin is tuple and args and args[-1] is not Ellipsis:
        text = f"a list of {len(args)} {_PLURALS.get(args[0], 'values')}"
    elif origin is tuple:
        text = f"a list of {_PLURALS.get(args[0] if args else None, 'values')}"
    else:
        text = _NAMES.get(tp, getattr(tp, "__name__", str(tp)))
    return f"{text} or null" if optional else text


def _short(tp: Any) -> str:
    """``int | None``, ``list[float]``, a section's class name."""
    optional, tp = _unwrap_optional(tp)
    args = typing.get_args(tp)
    if args:
        inner = ", ".join("..." if a is Ellipsis else _short(a) for a in args)
        text = f"{typing.get_origin(tp).__name__}[{inner}]"
    else:
        text = getattr(tp, "__name__", str(tp))
    return f"{text} | None" if optional else text


def _src(source: str | None) -> str:
    return f" (from {source})" if source else ""


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none"}


def _split_list(text: str) -> list[str]:
    s = text.strip()
    if len(s) >= 2 and s[0] in "[(" and s[-1] in "])":
        s = s[1:-1]
    if not s.strip():
        return []
    items = [item.strip() for item in s.split(",")]
    return [i[1:-1] if len(i) >= 2 and i[0] == i[-1] and i[0] in "'\"" else i for i in items]


def _convert(value: Any, tp: Any, key: str, source: str | None, *, text: bool, root: Any) -> Any:
    """``value`` as type ``tp``; ``text``: a command-line string to parse."""
    optional, inner = _unwrap_optional(tp)

    def bad() -> ConfigError:
        return ConfigError(
            f"config key {key!r} expects {_describe(tp)}, got {value!r}{_src(source)}"
        )

    if is_section(inner):
        if text:
            example = init_fields(inner)[0].name
            raise ConfigError(
                f"config key {key!r} is a section, not a value; set one of its keys instead, "
                f"e.g. {key}.{example}=...{_src(source)}"
            )
        if value is None:  # an empty section in YAML
            value = {}
        if isinstance(value, inner):
            return value
        if not isinstance(value, Mapping):
            raise bad()
        return build(inner, value, source, key, root)
    if value is None or (text and optional and value.strip().lower() in _NULL):
        if optional:
            return None
        raise bad()
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin in (list, tuple):
        if text:
            items = _split_list(value)
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise bad()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise bad()
            elem_types = list(args)
        else:
            elem_types = [args[0] if args else Any] * len(items)
        out = [
            _convert(v, t, f"{key}[{i}]", source, text=text, root=root)
            for i, (v, t) in enumerate(zip(items, elem_types, strict=True))
        ]
        return tuple(out) if origin is tuple else out
    if inner is Any:
        return value
    if text:
        s = value.strip()
        if inner is str:
            return value
        if inner is bool:
            if s.lower() in _TRUE:
                return True
            if s.lower() in _FALSE:
                return False
            raise bad()
        if inner not in (int, float):
            raise TypeError(f"unsupported config field type {tp!r} for {key!r}")
        try:
            return inner(s)
        except ValueError:
            raise bad() from None
    if inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif inner is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif inner is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config field type {tp!r} for {key!r}")
    raise bad()


# ---------------------------------------------------------------------------- keys


def _leaf_keys(obj: Any, prefix: str = "") -> list[str]:
    cls = obj if isinstance(obj, type) else type(obj)
    hints, out = type_hints(cls), []
    for f in init_fields(cls):
        key = join_key(prefix, f.name)
        tp = hints[f.name]
        if is_section(tp):
            sub = tp if isinstance(obj, type) else getattr(obj, f.name)
            out.extend(_leaf_keys(sub, key))
        else:
            out.append(key)
    return out


def flat_keys(cls: type) -> list[str]:
    """Every dotted leaf key of config class ``cls`` (or of a config instance), in order."""
    return _leaf_keys(cls)


def _children(keys: list[str]) -> dict[str, dict[str, str]]:
    """Section (``""`` = top level) -> {child name: dotted child key}; children may be sections."""
    out: dict[str, dict[str, str]] = {"": {}}
    for k in keys:
        parts = k.split(".")
        for i in range(1, len(parts) + 1):
            parent, child = ".".join(parts[: i - 1]), ".".join(parts[:i])
            out.setdefault(parent, {})[parts[i - 1]] = child
    return out


def _close_children(children: dict[str, str], name: str) -> list[str]:
    return [children[n] for n in difflib.get_close_matches(name, list(children), n=3)]


def _unknown(root: Any, key: str, source: str | None) -> ConfigError:
    """Unknown ``key``, with suggestions: siblings, the same name in other sections, typos."""
    keys = _leaf_keys(root)
    tree = _children(keys)
    prefix, _, last = key.rpartition(".")
    near: list[str] = []
    if prefix in tree:
        near = _close_children(tree[prefix], last)
    else:  # a misspelled section: look in the sections it resembles
        for section in difflib.get_close_matches(prefix, [s for s in tree if s], n=2):
            near += _close_children(tree[section], last)
    if not near:  # the same (or a similar) name in another section
        lasts = {k.rpartition(".")[2] for k in keys}
        close = difflib.get_close_matches(last, list(lasts), n=3, cutoff=0.75)
        near = [k for name in close for k in keys if k.rpartition(".")[2] == name]
        if prefix not in tree:
            near += difflib.get_close_matches(key, keys, n=3)
    near = list(dict.fromkeys(n for n in near if n != key))[:4]
    msg = f"unknown config key {key!r}{_src(source)}"
    if near:
        return ConfigError(f"{msg}; did you mean {', '.join(near)}?")
    if prefix in tree:
        where = f"under '{prefix}'" if prefix else "at the top level"
        return ConfigError(f"{msg}; valid keys {where}: {', '.join(tree[prefix])}")
    return ConfigError(msg)


# ------------------------------------------------------------------------ building


def build(cls: type[C], data: Mapping[str, Any], source: str | None, prefix: str, root: Any) -> C:
    if not isinstance(data, Mapping):
        what = f"config section {prefix!r}" if prefix else "the config"
        raise ConfigError(f"{what} expects a mapping of keys, got {data!r}{_src(source)}")
    hints = type_hints(cls)
    names = {f.name for f in init_fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = join_key(prefix, str(k))
        if k not in names:
            raise _unknown(root, key, source)
        kwargs[k] = _convert(v, hints[k], key, source, text=False, root=root)
    return cls(**kwargs)


def from_dict(cls: type[C], data: Mapping[str, Any], *, source: str = "config") -> C:
    """Builds ``cls`` from a nested mapping of YAML-typed values; missing keys keep defaults.

    Strict: unknown keys and wrong types raise ConfigError (an int is accepted for a float
    field, a bool is not accepted for a number, a list for a tuple, None only where the
    field is Optional; an empty section means its defaults). Bounds, choices and optimizer
    options are checked by ``validate``.
    """
    return build(cls, data, source, "", cls)


def parse_overrides(args: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` -> ``{key: value}`` (later items win)."""
    out: dict[str, str] = {}
    for item in args:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"invalid override {item!r}: expected key=value with a dotted key, "
                "e.g. optimizer.lr=0.05 or train.epochs=3"
            )
        out[key.strip()] = value
    return out


def set_key(cfg: Any, key: str, value: Any, source: str | None, *, text: bool) -> None:
    """Sets dotted ``key`` of ``cfg`` in place (``text``: parse a command-line string)."""
    obj, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        cls = type(obj)
        names = {f.name for f in init_fields(cls)} if dataclasses.is_dataclass(obj) else set()
        if part not in names:
            raise _unknown(cfg, key, source)
        tp = type_hints(cls)[part]
        sub_key = ".".join(parts[: i + 1])
        if i == len(parts) - 1:
            if is_section(tp) and not text and isinstance(value, Mapping):
                for k, v in value.items():
                    set_key(cfg, f"{sub_key}.{k}", v, source, text=text)
                return
            setattr(obj, part, _convert(value, tp, sub_key, source, text=text, root=cfg))
            return
        if not is_section(tp):
            raise _unknown(cfg, key, source)
        obj = getattr(obj, part)


def apply_overrides(
    cfg: C, overrides: Mapping[str, Any], *, source: str | None = "command line"
) -> C:
    """A copy of ``cfg`` with dotted-key overrides applied in order.

    String values are parsed by the field's type: booleans true/false/yes/no/on/off/1/0,
    numbers, ``null``/``none`` for Optional fields, lists and tuples as ``[a,b]``, ``a,b``
    or a single item; strings are taken as they are. Other values are taken as YAML-typed.
    """
    out = copy.deepcopy(cfg)
    for key, value in overrides.items():
        set_key(out, str(key), value, source, text=isinstance(value, str))
    return out


# ------------------------------------------------------------------------- validate


def _check_value(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number; got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{key} must be one of {', '.join(str(c) for c in choices)}; got {value!r}"
        )
    for name, op, ok in (
        ("min", ">=", lambda v, b: v >= b),
        ("gt", ">", lambda v, b: v > b),
        ("max", "<=", lambda v, b: v <= b),
        ("lt", "<", lambda v, b: v < b),
    ):
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key} must be {op} {bound}; got {value!r}")


def _validate(obj: Any, prefix: str) -> None:
    hints = type_hints(type(obj))
    for f in init_fields(type(obj)):
        key, value, tp = join_key(prefix, f.name), getattr(obj, f.name), hints[f.name]
        if is_section(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"config key {key!r} expects {_describe(tp)}, got {value!r}")
            _validate(value, key)
            continue
        _convert(value, tp, key, None, text=False, root=obj)  # type check
        if value is None:
            continue
        if isinstance(value, list | tuple):
            if f.metadata.get("nonempty") and not value:
                raise ConfigError(f"{key} must not be empty")
            for i, v in enumerate(value):
                _check_value(f"{key}[{i}]", v, f.metadata)
        else:
            _check_value(key, value, f.metadata)
    check = getattr(obj, "check_section", None)
    if check is not None:  # a section's own cross-field checks
        check(prefix)


def validate(cfg: Any, *, prefix: str = "") -> None:
    """Checks types, choices, bounds and the sections' own checks; raises ConfigError.

    ``prefix``: the dotted key of ``cfg`` when it is one section (for the messages).
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"validate expects a config instance, got {cfg!r}")
    _validate(cfg, prefix)


# ----------------------------------------------------------------------- plain / yaml


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not plain data")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dict of plain Python values (tuples become lists), in field order."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


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


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = join_key(prefix, str(k))
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def mapping_of(value: Any, what: str, source: str | None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} in {source!r} must be a mapping of dotted keys, got {value!r}")
    return value


_DIGEST_LINE = re.compile(r"^# sha256: ([0-9a-f]{64})\n?\Z", re.M)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_config(cfg: Any, path: str | Path) -> None:
    """Writes ``to_dict(cfg)`` as YAML atomically (temp file, fsync, ``os.replace``), with
    a last comment line holding the digest of the rest, which ``read_yaml(path,
    verify=True)`` checks."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
    write_text(path, f"{text}# sha256: {_sha256(text)}\n")


# --------------------------------------------------------------------------- compare


def _flat_values(data: Any, prefix: str = "") -> dict[str, Any]:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = to_dict(data)
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = join_key(prefix, str(k))
        if isinstance(v, Mapping) or (dataclasses.is_dataclass(v) and not isinstance(v, type)):
            out.update(_flat_values(v, key))
        else:
            out[key] = _plain(v) if isinstance(v, tuple) else v
    return out


def _ignored(key: str, ignore: Collection[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in ignore for i in range(1, len(parts) + 1))


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """Equal, with True != 1 (bools and numbers never match)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def diff_configs(
    a: Mapping[str, Any], b: Mapping[str, Any], *, ignore: Collection[str] = ()
) -> list[str]:
    """``["optimizer.lr: 0.1 -> 0.01", ...]`` for dotted keys whose values differ.

    ``a`` and ``b`` are nested mappings (``to_dict`` output) or config instances; keys in
    ``ignore``, or under a section named there, are skipped. A missing key shows as
    ``<missing>``.
    """
    fa, fb = _flat_values(a), _flat_values(b)
    out = []
    for key in [*fa, *(k for k in fb if k not in fa)]:
        if _ignored(key, ignore):
            continue
        va, vb = fa.get(key, _MISSING), fb.get(key, _MISSING)
        if va is _MISSING or vb is _MISSING or not _same(va, vb):
            show = ["<missing>" if v is _MISSING else repr(v) for v in (va, vb)]
            out.append(f"{key}: {show[0]} -> {show[1]}")
    return out


def config_help(cls: type) -> str:
    """One line per dotted key: default, type, help and allowed values (for ``--help``)."""
    lines = []

    def walk(c: type, prefix: str) -> None:
        hints = type_hints(c)
        for f in init_fields(c):
            key, tp = join_key(prefix, f.name), hints[f.name]
            if is_section(tp):
                walk(tp, key)
                continue
            factory = f.default_factory
            default = factory() if factory is not dataclasses.MISSING else f.default
            meta = f.metadata
            extra = [f"one of {', '.join(map(str, meta['choices']))}"] if "choices" in meta else []
            ops = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
            extra += [f"{op} {meta[name]}" for name, op in ops if name in meta]
            note = f" [{'; '.join(extra)}]" if extra else ""
            help_ = meta.get("help", "")
            lines.append(f"  {key}={_plain(default)!r} ({_short(tp)}): {help_}{note}")

    walk(cls, "")
    return "\n".join(lines)
