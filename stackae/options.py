"""click options generated from the config dataclasses, the options every run command shares
(--out, --resume, --quiet, --preset, --shard) and which settings a command line named.

One option per config field (type, default and help from the field), `--config FILE` read eagerly
into click's default_map so explicit flags still win, and the one-line errors every command
shares. What a run does with its settings (checks, folders, resuming) is the API's (api.py).
"""
from __future__ import annotations

import dataclasses
import functools
import time
import typing
from pathlib import Path

import click

from .config import PROVENANCE_KEYS, ConfigError, field_types, from_dict, load_json
from .schema import not_one_of


class ListParam(click.ParamType):
    """A comma-separated list (one value, or one per layer), checked item by item."""

    def __init__(self, item: type, choices=None):
        self.item, self.choices = item, choices
        self.name = f"{item.__name__}[,...]"

    def get_metavar(self, param, ctx=None):
        return ("[" + "|".join(self.choices) + "],..." if self.choices
                else {int: "INT,...", float: "FLOAT,..."}.get(self.item, "TEXT,..."))

    def convert(self, value, param, ctx):
        from .config import coerce
        try:
            out = coerce(param.name if param else "value", tuple[self.item, ...], value)
        except ConfigError as e:
            self.fail(e.message, param, ctx)
        for v in out:
            if self.choices and v not in self.choices:
                self.fail(not_one_of(v, self.choices), param, ctx)
        if not out:
            self.fail("needs at least one value", param, ctx)
        return out


class Choice(click.Choice):
    """click.Choice whose error names the nearest choices instead of listing them all."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value not in self.choices:
            self.fail(not_one_of(value, self.choices), param, ctx)
        return super().convert(value, param, ctx)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def options_from(cls, exclude: tuple[str, ...] = ()):
    """Decorate a command with one option per config field: type, default and help from the field."""
    types = field_types(cls)

    def decorate(f):
        for fld in reversed(dataclasses.fields(cls)):
            if fld.name in exclude:
                continue
            tp, meta, default = types[fld.name], fld.metadata, fld.default
            choices = meta.get("choices")
            if typing.get_origin(tp) is typing.Union:
                tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
            kw = dict(default=default, show_default=True, help=meta["help"])
            if typing.get_origin(tp) is tuple:
                kw["type"] = ListParam(typing.get_args(tp)[0], choices)
                kw["default"] = ",".join(map(str, default))
                f = click.option(flag(fld.name), fld.name, **kw)(f)
            elif tp is bool:
                f = click.option(f"{flag(fld.name)}/--no-{fld.name.replace('_', '-')}", fld.name,
                                 **kw)(f)
            elif meta.get("path"):
                kw["type"] = click.Path(exists=True)
                f = click.option(flag(fld.name), fld.name, **kw)(f)
            else:
                kw["type"] = Choice(choices) if choices else {int: click.INT,
                                                                    float: click.FLOAT}.get(tp, str)
                f = click.option(flag(fld.name), fld.name, **kw)(f)
        return f
    return decorate


def config_option(cls):
    """--config FILE: read eagerly into click's default_map, so explicit flags still win."""

    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            d = load_json(value)
            from_dict(cls, {k: v for k, v in d.items() if k not in PROVENANCE_KEYS})
        except ConfigError as e:
            where = (f"{value}: " + (f"{e.name!r} " if repr(e.name) not in e.message else "")
                     if e.name != "config" else "")
            raise click.BadParameter(f"{where}{e.message}", ctx=ctx, param=param)
        ctx.default_map = {**(ctx.default_map or {}),
                           **{k: (",".join(map(str, v)) if isinstance(v, list) else v)
                              for k, v in d.items() if k not in PROVENANCE_KEYS}}
        return value
    return click.option("--config", type=click.Path(dir_okay=False), is_eager=True,
                        expose_value=False, callback=callback,
                        help="JSON file of settings (e.g. a run's config.json); flags override it.")


def friendly_errors(f):
    """Known failures become one line: an option that does not fit the data or the folder is a
    usage error (exit 2, naming it); bad data, a bad checkpoint or a run problem exit 1."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from .checkpoint import CheckpointError
        from .data import DataError
        from .runlog import RunError
        try:
            return f(*args, **kwargs)
        except ConfigError as e:  # a setting's value: a usage error naming its option
            raise click.BadParameter(e.message, param_hint=f"'{flag(e.name)}'")
        except (DataError, CheckpointError, RunError) as e:
            if getattr(e, "option", None):
                raise click.BadParameter(str(e), param_hint=f"'{e.option}'")
            raise click.ClickException(str(e))
        except (MemoryError, RuntimeError) as e:
            if not isinstance(e, MemoryError) and "allocate" not in str(e):
                raise
            tried = str(e)[str(e).find("tried to allocate"):].split(".")[0] if "tried to" in str(e) \
                else "an allocation failed"
            raise click.ClickException(f"out of memory ({tried}); use smaller --layers or "
                                       f"--batch-size")
    return wrapper


def common_run_options(f):
    f = click.option("--quiet", "-q", is_flag=True, help="No per-epoch progress on stderr.")(f)
    f = click.option("--resume", is_flag=True,
                     help="Continue the run in an existing --out folder: what finished is kept, "
                          "and a fine-tuning goes on from its resume point (resume.pt, saved "
                          "every 5 minutes).")(f)
    f = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Run folder to create [default: runs/<command>/<date-time>].")(f)
    return f


def out_default(kind: str, out, resume: bool) -> Path:
    """--out, or a new runs/<kind>/<date-time>; --resume needs the folder it continues named."""
    if out is None and resume:
        raise click.BadParameter("continues a run folder; name it with --out",
                                 param_hint="'--resume'")
    return Path(out) if out is not None else Path("runs") / kind / time.strftime("%Y%m%d-%H%M%S")


def given(ctx, kwargs: dict) -> dict:
    """The settings this command line names (flags, --config, --preset), not click's defaults:
    they make a new run's config over the defaults, or must agree with a resumed run's."""
    return {k: v for k, v in kwargs.items()
            if ctx.get_parameter_source(k) not in (None, click.core.ParameterSource.DEFAULT)}


def preset_option(f):
    """--preset NAME: eager, so its values become defaults that --config and flags override."""
    from .config_grid import ABLATE_PRESETS

    def callback(ctx, param, value):
        values = ABLATE_PRESETS[value]
        ctx.default_map = {**(ctx.default_map or {}),
                           **{k: (",".join(map(str, v)) if isinstance(v, tuple) else v)
                              for k, v in values.items()}}
        return value
    return click.option("--preset", type=click.Choice(list(ABLATE_PRESETS)), default="default",
                        show_default=True, is_eager=True, callback=callback,
                        help="Grid size: default is the ~5-minute CPU comparison; full is "
                             "784-1000-1000-500, seeds 0-9, budgets 100,1000,10000,all, "
                             "10 pretraining and 30 fine-tuning epochs.")(f)


def shard_param(ctx, param, value):
    if value is None:
        return None
    from .grid import parse_shard
    try:
        return parse_shard(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param)
