"""The machinery behind the settings classes of config.py: a field with its help (`opt`), value
checks (`check`, `ConfigError`), and the JSON round trip that refuses unknown keys and wrong types.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting with a bad value: `name` is the field, `message` what is wrong with its value.
    Shown as text (the Python API's traceback) it names the setting, "lr: must be positive, got
    -1.0"; the CLI names the option instead (`--lr`), from `name`, beside `message`."""

    def __init__(self, name: str, message: str):
        super().__init__(name, message)
        self.name, self.message = name, message

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def opt(default, help: str, **meta):
    """A config field: its default, its one-line help (also the CLI's), and CLI hints (choices...)."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults so configs stay frozen")
    return field(default=default, metadata={"help": help, **meta})


def check(cond: bool, name: str, message: str):
    if not cond:
        raise ConfigError(name, message)


# ---- JSON round trip ------------------------------------------------------------------------

def to_dict(cfg) -> dict:
    return {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v)
            for f in dataclasses.fields(cfg)}


def field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(name: str, tp, value):
    """Check `value` (from JSON or a flag) against a field's type; per-layer tuples accept a scalar
    or a list. Raises ConfigError naming the field."""
    if type(value).__module__ == "numpy":  # numpy scalars and arrays, as the Python values they hold
        value = value.tolist()
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = value.replace(" ", "").split(",") if value else []
            if "" in value:  # "1000,,500" must not quietly become 1000,500
                raise ConfigError(name, f"has an empty item in {','.join(value)!r}; expected "
                                        f"comma-separated values like 1000,500")
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(coerce(name, item, v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif tp is int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = int(value)
            except ValueError:
                pass
        if number is not None:
            if not -2**63 <= number < 2**63:  # torch's seeds and sizes are 64-bit
                raise ConfigError(name, f"{number} is out of range (at most {2**63 - 1})")
            return number
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, tp)
    raise ConfigError(name, f"expected {kind}, got {value!r}")


def from_dict(cls, d: dict, *, ignore: tuple[str, ...] = ()):
    """Build `cls` from a dict, refusing unknown keys and wrong types (keys in `ignore` are skipped:
    the provenance fields that `config.json` carries)."""
    if hasattr(cls, "migrate"):  # names an older version saved
        d = cls.migrate(d)
    types = field_types(cls)
    unknown = sorted(set(d) - set(types) - set(ignore))
    if unknown:
        raise ConfigError(unknown[0],
                          f"unknown setting {unknown[0]!r}{did_you_mean(unknown[0], types)}")
    kwargs = {}
    for name, tp in types.items():
        if name in d:
            kwargs[name] = coerce(name, tp, d[name])
            choices = dataclasses.fields(cls)[list(types).index(name)].metadata.get("choices")
            vals = kwargs[name] if isinstance(kwargs[name], tuple) else (kwargs[name],)
            for v in vals:
                if choices and v not in choices:
                    raise ConfigError(name, not_one_of(v, choices))
    return cls(**kwargs)


def did_you_mean(word, known) -> str:
    """'; did you mean 'a' or 'b'?' for the nearest known names, '' when none is near."""
    near = difflib.get_close_matches(str(word), list(known), n=3, cutoff=0.6)
    if not near and "_" not in str(word):  # a flag spelled with dashes
        near = difflib.get_close_matches(str(word).replace("-", "_"), list(known), n=3, cutoff=0.6)
    if not near:
        return ""
    names = [repr(n) for n in near]
    return "; did you mean " + (", ".join(names[:-1]) + " or " if len(names) > 1 else "") \
        + names[-1] + "?"


def not_one_of(value, choices) -> str:
    """One line for a value outside a fixed set: the nearest choices, else all when they are few."""
    hint = did_you_mean(value, choices)
    if hint or len(choices) > 12:
        return f"{value!r} is not a known choice{hint}"
    return f"{value!r} is not one of {', '.join(choices)}"


def load_json(path: str | Path) -> dict:
    """Read a JSON object from a config file; errors name the file."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror}")
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not a text file (a checkpoint?); expected a JSON "
                                    f"file of settings such as a run's config.json")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("config", f"{path} is not valid JSON ({e.msg} at line {e.lineno})")
    if not isinstance(d, dict):
        raise ConfigError("config", f"{path} must hold a JSON object of settings")
    return d
