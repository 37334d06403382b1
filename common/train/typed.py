"""Typed configs on pydantic: sections <- nested mappings (YAML) <- ``key=value`` overrides.

A section is a :class:`Section`, a pydantic model in strict mode: an int is taken for a
float and a list for a tuple, nothing else is converted; unknown keys are refused, floats
must be finite and an empty (null) section means its defaults. A field made with
:func:`keyfield` carries its ``help`` (one line) and its checks: ``choices``, ``min`` /
``max`` (inclusive), ``gt`` / ``lt`` (exclusive) and ``nonempty``; for a list field they
apply to each element. A section may define ``check_section(self, prefix)`` for checks
across its fields. Domains subclass sections to add keys.

What pydantic does not do is here: command-line strings parsed by the field's type
(``a,b`` for a list, ``null`` for an optional value), "did you mean" for an unknown key,
one line per problem naming the dotted key and where its value came from, and the checks
run once, by :func:`validate`, after every layer of a config is merged (a file's value may
be out of bounds if the command line replaces it). Every problem is a ``ConfigError``
whose message is meant for the user as is. The YAML files: :mod:`common.train.config_files`.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from common.errors import UserError

C = TypeVar("C", bound="Section")
_CHECKS = ("choices", "min", "max", "gt", "lt", "nonempty")


class ConfigError(UserError, ValueError):
    """A configuration problem; the message is shown to the user without a traceback."""


def keyfield(default: Any = None, help: str = "", *, factory: Any = None, **checks: Any) -> Any:
    """A section field with ``help`` and checks (choices, min, max, gt, lt, nonempty)."""
    if unknown := set(checks) - set(_CHECKS):
        raise TypeError(f"unknown field checks {sorted(unknown)}; known: {', '.join(_CHECKS)}")
    if factory is not None:
        return Field(default_factory=factory, description=help, json_schema_extra=checks)
    return Field(default, description=help, json_schema_extra=checks)


def checks_of(cls: type[Section], name: str) -> dict[str, Any]:
    """The checks :func:`keyfield` gave field ``name`` of section ``cls``."""
    extra = cls.model_fields[name].json_schema_extra
    return dict(extra) if isinstance(extra, Mapping) else {}


class Section(BaseModel):
    """A config section (see the module docstring)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True
    )

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_forms(cls, value: Any, info: Any) -> Any:
        tp = _unwrap_optional(cls.model_fields[info.field_name].annotation)[1]
        if value is None and is_section(tp):
            return {}
        if isinstance(value, list) and typing.get_origin(tp) is tuple:
            return tuple(value)
        return value

    def check_section(self, prefix: str) -> None:
        """Checks across this section's fields, run by :func:`validate` (none here)."""


# ------------------------------------------------------------------------------- types


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


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
    elif origin is tuple and args and args[-1] is not Ellipsis:
        text = f"a list of {len(args)} {_PLURALS.get(args[0], 'values')}"
    elif origin in (list, tuple):
        text = f"a list of {_PLURALS.get(args[0] if args else None, 'values')}"
    else:
        text = _NAMES.get(tp, getattr(tp, "__name__", str(tp)))
    return f"{text} or null" if optional else text


def _short(tp: Any) -> str:
    """``int | None``, ``list[float]``, a section's class name."""
    optional, tp = _unwrap_optional(tp)
    args = typing.get_args(tp)
    text = getattr(tp, "__name__", str(tp))
    if args:
        text = f"{typing.get_origin(tp).__name__}[{', '.join(_short(a) for a in args)}]"
    return f"{text} | None" if optional else text


def _src(source: str | None) -> str:
    return f" (from {source})" if source else ""


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# ---------------------------------------------------------------------------- keys


def flat_keys(cls: Any) -> list[str]:
    """Every dotted leaf key of config class ``cls`` (or of a config instance), in order."""
    cls = cls if isinstance(cls, type) else type(cls)
    out = []
    for name, info in cls.model_fields.items():
        tp = info.annotation
        out += [join_key(name, k) for k in flat_keys(tp)] if is_section(tp) else [name]
    return out


def _type_at(cls: type, parts: Collection[str | int]) -> Any:
    """The annotation at a path of field names and list indices."""
    tp: Any = cls
    for part in parts:
        inner = _unwrap_optional(tp)[1]
        if isinstance(part, int):
            args = typing.get_args(inner)
            tp = args[min(part, len(args) - 1)] if args and args[-1] is not Ellipsis else args[0]
        else:
            tp = inner.model_fields[part].annotation
    return tp


def _unknown(root: type, key: str, source: str | None) -> ConfigError:
    """Unknown ``key``, with suggestions: siblings, the same name in other sections, typos."""
    keys = flat_keys(root)
    tree: dict[str, dict[str, str]] = {"": {}}  # section -> {child name: dotted child key}
    for k in keys:
        parts = k.split(".")
        for i in range(1, len(parts) + 1):
            tree.setdefault(".".join(parts[: i - 1]), {})[parts[i - 1]] = ".".join(parts[:i])
    prefix, _, last = key.rpartition(".")

    def close(children: dict[str, str]) -> list[str]:
        return [children[n] for n in difflib.get_close_matches(last, list(children), n=3)]

    near: list[str] = []
    if prefix in tree:
        near = close(tree[prefix])
    else:  # a misspelled section: look in the sections it resembles
        for section in difflib.get_close_matches(prefix, [s for s in tree if s], n=2):
            near += close(tree[section])
    if not near:  # the same (or a similar) name in another section
        lasts = {k.rpartition(".")[2] for k in keys}
        similar = difflib.get_close_matches(last, list(lasts), n=3, cutoff=0.75)
        near = [k for name in similar for k in keys if k.rpartition(".")[2] == name]
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


def _field_type(root: type, key: str, source: str | None) -> Any:
    """The annotation of dotted ``key`` of ``root``; an unknown key raises ConfigError."""
    tp: Any = root
    for part in key.split("."):
        if not is_section(tp) or part not in tp.model_fields:
            raise _unknown(root, key, source)
        tp = tp.model_fields[part].annotation
    return tp


# ------------------------------------------------------------------------ building


def _translate(error: ValidationError, root: type, sources: Mapping[str, Any]) -> ConfigError:
    """pydantic's first error as one line naming the dotted key and its value's source."""
    first = error.errors()[0]
    loc = list(first["loc"])
    if first["type"] in ("too_long", "too_short", "missing") and loc and isinstance(loc[-1], int):
        loc.pop()  # a tuple of the wrong length: name the tuple
    names = [p for p in loc if isinstance(p, str)]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)[1:]
    value = first["input"]
    source = next(
        (sources[k] for i in range(len(names), -1, -1) if (k := ".".join(names[:i])) in sources),
        None,
    )
    if first["type"] == "extra_forbidden":
        return _unknown(root, key, source)
    if first["type"] == "finite_number":
        return ConfigError(f"{key} must be a finite number; got {value!r}")
    return ConfigError(
        f"config key {key!r} expects {_describe(_type_at(root, loc))}, got {value!r}{_src(source)}"
    )


def validated(cls: type[C], data: Any, sources: Mapping[str, str | None]) -> C:
    if not isinstance(data, Mapping):
        raise ConfigError(f"the config expects a mapping of keys, got {data!r}{_src(sources[''])}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise _translate(e, cls, sources) from None


def from_dict(cls: type[C], data: Mapping[str, Any], *, source: str = "config") -> C:
    """Builds ``cls`` from a nested mapping of YAML-typed values; missing keys keep defaults.

    Strict: unknown keys and wrong types raise ConfigError (an int is accepted for a float
    field, a bool is not accepted for a number, a list for a tuple, None only where the
    field is Optional; an empty section means its defaults). Bounds, choices and the
    sections' own checks are :func:`validate`'s.
    """
    return validated(cls, data, {"": source})


def parse_overrides(args: Collection[str]) -> dict[str, str]:
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


_NULL = {"null", "none"}
_LAX = ConfigDict(strict=False)


def _split_list(text: str) -> list[str]:
    s = text.strip()
    if len(s) >= 2 and s[0] in "[(" and s[-1] in "])":
        s = s[1:-1]
    if not s.strip():
        return []
    items = [item.strip() for item in s.split(",")]
    return [i[1:-1] if len(i) >= 2 and i[0] == i[-1] and i[0] in "'\"" else i for i in items]


def _parse_text(text: str, tp: Any, key: str, source: str | None) -> Any:
    """A command-line string as field type ``tp``: booleans true/false/yes/no/on/off/1/0,
    numbers, null/none for an optional value, lists as ``[a,b]``, ``a,b`` or one item."""
    optional, inner = _unwrap_optional(tp)
    if is_section(inner):
        example = next(iter(inner.model_fields))
        raise ConfigError(
            f"config key {key!r} is a section, not a value; set one of its keys instead, "
            f"e.g. {key}.{example}=...{_src(source)}"
        )
    if optional and text.strip().lower() in _NULL:
        return None
    if inner is str:
        return text
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    value: Any = _split_list(text) if origin in (list, tuple) else text.strip()
    if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
        raise ConfigError(f"config key {key!r} expects {_describe(tp)}, got {text!r}{_src(source)}")
    try:
        return TypeAdapter(inner, config=_LAX).validate_python(value)
    except ValidationError as e:
        first = e.errors()[0]
        at = "".join(f"[{i}]" for i in first["loc"])
        element = _type_at(inner, first["loc"]) if at else tp
        raise ConfigError(
            f"config key {key + at!r} expects {_describe(element)}, "
            f"got {first['input']!r}{_src(source)}"
        ) from None


COMMAND_LINE = "command line"
#: A layer of dotted keys: the keys, its label in messages, whether its strings are
#: command-line text (parsed by the field's type) rather than YAML values.
Layer = tuple[Mapping[str, Any], "str | None", bool]


def merge(
    root: type, data: Mapping[str, Any], layers: Collection[Layer], sources: dict[str, Any]
) -> dict[str, Any]:
    """A copy of nested ``data`` with each layer's dotted keys set in order; ``sources``
    receives each key's layer label (for the messages)."""
    out = copy.deepcopy(dict(data))
    for keys, label, text in layers:
        for key, value in keys.items():
            _set(out, root, str(key), value, (label, text), sources)
    return out


def _set(data: dict, root: type, key: str, value: Any, layer: tuple, sources: dict) -> None:
    (label, text), tp = layer, _field_type(root, key, layer[0])
    if text and isinstance(value, str):
        value = _parse_text(value, tp, key, label)
    elif is_section(tp) and isinstance(value, Mapping):  # a whole section given as a mapping
        for k, v in value.items():
            _set(data, root, f"{key}.{k}", v, layer, sources)
        return
    node, parts = data, key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}  # absent, or an empty (null) section
        node = node[part]
    node[parts[-1]] = value
    sources[key] = label


def apply_overrides(
    cfg: C, overrides: Mapping[str, Any], *, source: str | None = COMMAND_LINE
) -> C:
    """A new config: ``cfg`` with dotted-key overrides applied in order; string values are
    parsed as on the command line (see :func:`_parse_text`), others taken as YAML-typed."""
    sources: dict[str, Any] = {"": None}
    data = merge(type(cfg), to_dict(cfg), [(overrides, source, True)], sources)
    return validated(type(cfg), data, sources)


# ------------------------------------------------------------------------- validate


def _check_value(key: str, value: Any, checks: Mapping[str, Any]) -> None:
    choices = checks.get("choices")
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
        bound = checks.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key} must be {op} {bound}; got {value!r}")


def validate(cfg: Section, *, prefix: str = "") -> None:
    """Checks choices, bounds and the sections' own checks; raises ConfigError (the types
    were checked when ``cfg`` was built or assigned). ``prefix``: the dotted key of
    ``cfg`` when it is one section (for the messages)."""
    if not isinstance(cfg, Section):
        raise TypeError(f"validate expects a config instance, got {cfg!r}")
    for name in type(cfg).model_fields:
        key, value = join_key(prefix, name), getattr(cfg, name)
        if isinstance(value, Section):
            validate(value, prefix=key)
            continue
        checks = checks_of(type(cfg), name)
        if isinstance(value, list | tuple):
            if checks.get("nonempty") and not value:
                raise ConfigError(f"{key} must not be empty")
            for i, item in enumerate(value):
                _check_value(f"{key}[{i}]", item, checks)
        elif value is not None:
            _check_value(key, value, checks)
    cfg.check_section(prefix)


# ------------------------------------------------------------------ plain data, diffs


def to_dict(cfg: Section) -> dict[str, Any]:
    """Nested dict of plain Python values (tuples become lists), in field order."""
    return cfg.model_dump(mode="json")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings (or sections) -> ``{dotted key: value}`` (tuples as lists)."""
    if isinstance(data, Section):
        data = to_dict(data)
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = join_key(prefix, str(k))
        if isinstance(v, Mapping | Section):
            out.update(flatten(v, key))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def mapping_of(value: Any, what: str, source: str | None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} in {source!r} must be a mapping of dotted keys, got {value!r}")
    return value


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
    fa, fb = flatten(a), flatten(b)
    out = []
    for key in [*fa, *(k for k in fb if k not in fa)]:
        parts = key.split(".")
        if any(".".join(parts[:i]) in ignore for i in range(1, len(parts) + 1)):
            continue
        va, vb = fa.get(key, _MISSING), fb.get(key, _MISSING)
        if va is _MISSING or vb is _MISSING or not _same(va, vb):
            show = ["<missing>" if v is _MISSING else repr(v) for v in (va, vb)]
            out.append(f"{key}: {show[0]} -> {show[1]}")
    return out


def config_help(cls: type[Section], prefix: str = "") -> str:
    """One line per dotted key: default, type, help and allowed values (for ``--help``)."""
    lines = []
    for name, info in cls.model_fields.items():
        key, tp = join_key(prefix, name), info.annotation
        if is_section(tp):
            lines.append(config_help(tp, key))
            continue
        checks = checks_of(cls, name)
        extra = [f"one of {', '.join(map(str, checks['choices']))}"] if "choices" in checks else []
        ops = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
        extra += [f"{op} {checks[n]}" for n, op in ops if n in checks]
        note = f" [{'; '.join(extra)}]" if extra else ""
        default = info.get_default(call_default_factory=True)
        default = list(default) if isinstance(default, tuple) else default
        lines.append(f"  {key}={default!r} ({_short(tp)}): {info.description or ''}{note}")
    return "\n".join(lines)
