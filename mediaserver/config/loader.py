"""Reading and checking: TOML and `SECTION.KEY=VALUE` overrides become a Config, or one ConfigError that
names every problem. The rules (ranges, choices, lists of tables, what sections must agree on) come from
the section modules; this module only applies them."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from . import access, cluster, media, record, relay, server, webrtc
from .base import ConfigError, TableRule
from .schema import Config

_SECTIONS = (server, access, cluster, media, record, relay, webrtc)
_RANGES: dict[str, tuple[float, float]] = {k: v for m in _SECTIONS for k, v in m.RANGES.items()}
_CHOICES: dict[str, tuple[str, ...]] = {k: v for m in _SECTIONS for k, v in m.CHOICES.items()}
_URL_KEYS: tuple[str, ...] = tuple(k for m in _SECTIONS for k in getattr(m, "URL_KEYS", ()))
_NUMBER_OR_AUTO: tuple[str, ...] = tuple(k for m in _SECTIONS for k in getattr(m, "NUMBER_OR_AUTO", ()))
_TABLES: dict[str, TableRule] = {k: v for m in _SECTIONS for k, v in getattr(m, "TABLES", {}).items()}
_BY_CLASS: dict[type, TableRule] = {rule.cls: rule for rule in _TABLES.values()}
_PROBLEMS = tuple(m.problems for m in _SECTIONS if hasattr(m, "problems"))
_BLANK = {"str": "", "int": 0, "float": 0.0}  # a required key's stand-in default, by its annotation


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    return f"; known keys: {', '.join(options)}"


def _coerce(where: str, value: Any, default: Any) -> Any:
    if where in _NUMBER_OR_AUTO:  # kept as text: "2" or "auto"
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)
        raise ConfigError(f'{where} = {value!r} must be a whole number or "auto"')
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r} must be a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r} must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r} must be a string")
        return value
    if dataclasses.is_dataclass(default):  # a table of its own inside a section: [record.s3]
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of keys, e.g. [{where}]")
        return _table(where, None, value, type(default))
    rule = _TABLES.get(where)
    if rule is not None:  # a list of tables: [[abr.ladder]], [[record.retention]]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{where} must be a list of tables, e.g. [[{where}]] {rule.example}")
        tables = tuple(_table(where, i, v, rule.cls) for i, v in enumerate(value))
        if rule.unique:
            names = [getattr(t, rule.unique) for t in tables]
            twice = sorted({x for x in names if names.count(x) > 1})
            if twice and rule.unique == "label":
                raise ConfigError(f"{where} names {', '.join(twice)} more than once; each label names one rendition")
            if twice:
                raise ConfigError(f"{where} names {rule.unique} {', '.join(twice)} more than once; "
                                  f"give each {rule.unique} one table")
        return tables
    if kind is tuple:  # a list of strings; on the command line also "a,b"
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{where} = {value!r} must be a list of strings, e.g. ["a", "b"]')
        return tuple(value)
    raise ConfigError(f"{where} has an unsupported type")  # pragma: no cover - guards new fields


def _table(where: str, index: int | None, value: dict[str, Any], cls: type) -> Any:
    """One table of a list such as [[abr.ladder]] (or a table of its own, index None): its keys checked
    like a section's."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [name for name, f in fields.items() if f.default is dataclasses.MISSING]
    here = where if index is None else f"{where}[{index}]"
    for key in value:
        if key not in fields:
            raise ConfigError(f"unknown key {here}.{key}" + _suggest(key, list(fields)))
    missing = [k for k in required if k not in value]
    rule = _BY_CLASS.get(cls)
    if missing and rule is not None:
        raise ConfigError(f"{here} needs {', '.join(missing)}, e.g. {rule.example}")
    built: dict[str, Any] = {}
    short = where.split(".")[-1]
    for key, f in fields.items():
        if key not in value:
            continue
        sample = f.default if f.default is not dataclasses.MISSING else _BLANK[str(f.type)]
        coerced = _coerce(f"{here}.{key}", value[key], sample)
        _check(f"{short}.{key}", coerced, f"{here}.{key}")
        built[key] = coerced
    if rule is not None and rule.check is not None:
        rule.check(here, built)
    return cls(**built)


def _check(where: str, value: Any, shown: str = "") -> None:
    shown = shown or where
    if where in _RANGES:
        lo, hi = _RANGES[where]
        if not lo <= value <= hi:
            raise ConfigError(f"{shown} = {value!r} is out of range; must be {lo:g}..{hi:g}")
    if where in _CHOICES and value not in _CHOICES[where]:
        raise ConfigError(f"{shown} = {value!r} is not accepted; must be one of {', '.join(_CHOICES[where])}")
    if where in _URL_KEYS and value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{shown} = {value!r} must be an http:// or https:// URL, or \"\" for none")
    if where == "http.trusted_proxies":
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"{where} entry {entry!r} is not an IP address or CIDR; write e.g. "
                                  '"127.0.0.1", "10.0.0.0/8" or "fd00::/8"') from None


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, refusing unknown sections and keys and bad values: every problem
    is named in one ConfigError, so a file with several mistakes is mended in one go."""
    problems: list[str] = []
    config = _build(raw, problems)
    if problems:
        raise _problems_error(problems)
    return config


def _build(raw: dict[str, Any], problems: list[str]) -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built: dict[str, Any] = {}
    for section_name, section_values in raw.items():
        if section_name not in sections:
            problems.append(f"unknown section [{section_name}]" + _suggest(section_name, list(sections)))
            continue
        if not isinstance(section_values, dict):
            problems.append(f"[{section_name}] must be a table of keys, not {section_values!r}")
            continue
        cls = sections[section_name].default_factory()  # type: ignore[misc]
        defaults = {f.name: getattr(cls, f.name) for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in section_values.items():
            where = f"{section_name}.{key}"
            if key not in defaults:
                problems.append(f"unknown key [{section_name}].{key}" + _suggest(key, list(defaults)))
                continue
            try:
                coerced = _coerce(where, value, defaults[key])
                _check(where, coerced)
            except ConfigError as err:
                problems.append(str(err))
                continue
            values[key] = coerced
        built[section_name] = dataclasses.replace(cls, **values)
    config = Config(**built)
    for check in _PROBLEMS:
        problems.extend(check(config))
    return config


def _problems_error(problems: list[str]) -> ConfigError:
    if len(problems) == 1:
        return ConfigError(problems[0])
    return ConfigError(f"{len(problems)} problems in the configuration:\n  " + "\n  ".join(problems))


def parse_override(text: str) -> tuple[str, str, Any]:
    """`SECTION.KEY=VALUE` -> (section, key, value). VALUE is read as TOML, else taken as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like SECTION.KEY=VALUE, e.g. rtmp.port=1936")
    path, raw_value = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()
    return section, key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read the TOML file at `path` (if any), apply overrides, validate everything."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read config file {p}: {err.strerror}; check the path given to --config") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {p} is not UTF-8 text") from err
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {p} is not valid TOML: {err}") from err
    problems: list[str] = []
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except ConfigError as err:
            problems.append(str(err))
            continue
        table = raw.setdefault(section, {})
        if "." in key:  # a key of a table inside the section: record.s3.bucket=NAME
            inner, key = key.split(".", 1)
            table = table.setdefault(inner, {}) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            problems.append(f"[{section}] must be a table of keys")
            continue
        table[key] = value
    config = _build(raw, problems)
    if problems:
        raise _problems_error(problems)
    return config
