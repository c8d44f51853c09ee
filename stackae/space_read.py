"""A search space as `stackae tune` reads it (--space: JSON text or a file) and checks it: every
setting tunable (space.py says which are, and which arms draw each), every range and value one
that --config would take for the grid, turned into Optuna distributions (`distributions`).
A bad space is one ConfigError naming the setting and what was expected, before any folder.
"""
from __future__ import annotations

import json
import math
import typing
import warnings
from pathlib import Path

from .config import OBJECTIVES, RUN_ONLY, ConfigError, FinetuneConfig, PretrainConfig
from .config import field_types, from_dict, to_dict
from .config_grid import AblateConfig
from .schema import did_you_mean
from .space import (PRETRAINING, RANGE, SPACE_HELP, applied, draws, given_per_arm, not_drawn,
                    stage_settings, tunable, unused)


def read_space(value) -> dict:
    """--space: a JSON file or JSON text."""
    text = value
    if not str(value).strip() or str(value).lstrip()[:1] == "[":
        raise ConfigError("space", f"expected {SPACE_HELP} (as JSON text or a file holding it), "
                          f"got {str(value)!r}")
    if not str(value).lstrip().startswith("{"):
        try:
            text = Path(value).read_text()
        except OSError as e:
            raise ConfigError("space", f"cannot read {value}: {e.strerror}; expected a JSON file "
                              f"or JSON text")
        except UnicodeDecodeError:
            raise ConfigError("space", f"{value} is not a text file; expected a JSON file or "
                              f"JSON text")
    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError("space", f"is not valid JSON ({e.msg} at line {e.lineno}); expected "
                          f"{SPACE_HELP}")


def no_duplicates(pairs: list) -> dict:
    seen = [k for k, _ in pairs]
    twice = sorted({k for k in seen if seen.count(k) > 1})
    if twice:
        raise ConfigError("space", f"names {twice[0]!r} twice in one object; expected each "
                          f"setting, and each arm of a setting, once")
    return dict(pairs)


def distributions(space: dict, cfg: AblateConfig) -> dict:
    """Optuna distributions for `space`, every bound checked as a setting of the grid."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("space", f"expected {SPACE_HELP}")
    types, allowed, out = field_types(AblateConfig), tunable() + sorted(PRETRAINING), {}
    for name, spec in space.items():
        if name not in allowed:
            why = not_tunable(name, types)
            raise ConfigError("space", f"{name!r} {why}; tunable: fine-tuning settings such as "
                              f"finetune_lr, finetune_batch_size, dropout, and pretraining ones "
                              f"such as pretrain_lr, pretrain_epochs, noise"
                              f"{did_you_mean(name, allowed)}")
        if name in PRETRAINING and not any(i in OBJECTIVES for i in cfg.inits):
            raise ConfigError("space", f"{name!r} is a pretraining setting and no arm of the grid "
                              f"is pretrained (inits: {', '.join(cfg.inits)})")
        why = unused(name, space, cfg)
        if why:
            raise ConfigError("space", f"{name!r} {why}")
        tp = types[name]
        if typing.get_origin(tp) is tuple:  # per layer: a range draws one value for every layer
            tp = typing.get_args(tp)[0]
        drawers = [i for i in cfg.inits if draws(i, name)]
        if isinstance(spec, dict) and not RANGE & set(spec) and not given_per_arm(spec):
            odd = sorted(spec)[0] if spec else None
            hint = "" if odd is None else (
                f"; {odd!r} is neither a key of a range (low, high, log, step) nor an arm of the "
                f"grid{did_you_mean(odd, [*drawers, *sorted(RANGE)])}")
            raise ConfigError("space", f"{name!r}: expected a range {{\"low\": a, \"high\": b}}, a "
                              f"list of values, or one of those for each arm "
                              f"({', '.join(drawers)}){hint}")
        if given_per_arm(spec):
            for arm in spec:
                if arm in cfg.inits and arm not in drawers:
                    raise ConfigError("space", f"{name!r}: {not_drawn(arm, name)}; expected a "
                                      f"range or list for each arm that draws it "
                                      f"({', '.join(drawers)})")
                if arm not in drawers:
                    raise ConfigError("space", f"{name!r}: {arm!r} is not an arm of the grid; "
                                      f"expected a range or list for each of "
                                      f"{', '.join(drawers)}{did_you_mean(arm, drawers)}")
            missing = [a for a in drawers if a not in spec]
            if missing:
                raise ConfigError("space", f"{name!r} gives no range or list for "
                                  f"{', '.join(missing)}; a setting given per arm needs one for "
                                  f"each arm that draws it ({', '.join(drawers)})")
            out[name] = {arm: distribution(cfg, name, tp, spec[arm], f"{name!r} for {arm}")
                         for arm in drawers}
        else:
            out[name] = distribution(cfg, name, tp, spec, repr(name))
    if not set(out) - PRETRAINING:
        raise ConfigError("space", "needs at least one fine-tuning setting (such as finetune_lr): "
                          "every arm tunes those at every budget, and a random-init arm nothing "
                          "else")
    return out


def not_tunable(name: str, types: dict) -> str:
    """Why the space cannot tune `name`."""
    if name not in types:
        return "is not a setting"
    if name in RUN_ONLY or name == "device":
        return "is a setting of how the runs execute, not of what they learn"
    stages = stage_settings("pretrain", PretrainConfig) | stage_settings("finetune", FinetuneConfig)
    if name not in stages:
        return "is a setting of the grid (which arms, seeds, budgets and depths it runs)"
    return "is a setting of both stages (it changes the stacks and the classifier alike)"


def distribution(cfg: AblateConfig, name: str, tp, spec, label: str):
    """The Optuna distribution of one setting's range or list, every value checked as the
    setting of a grid; `label` names it in errors ('finetune_lr', or 'finetune_lr' for rbm)."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)
    if isinstance(spec, list) and spec:
        values = [tuple(v) if isinstance(v, list) else v for v in spec]
        for v in values:  # each value must make a valid grid
            valid_value(cfg, name, v, label)
        with warnings.catch_warnings():  # tuples (per-layer values) cannot go into Optuna's
            warnings.filterwarnings(  # database storage; these studies live in memory
                "ignore", message="Choices for a categorical distribution should be")
            return CategoricalDistribution(values)
    if not (isinstance(spec, dict) and {"low", "high"} <= set(spec) <= RANGE):
        each = " (or one of those for each arm)" if label == repr(name) else ""
        raise ConfigError("space", f"{label}: expected a range {{\"low\": a, \"high\": b}} "
                          f"or a non-empty list of values{each}, got {json.dumps(spec)}")
    if tp not in (int, float):
        raise ConfigError("space", f"{label} takes a list of values, not a range")
    if not isinstance(spec.get("log", False), bool):
        raise ConfigError("space", f"{label}: \"log\" must be true or false, got "
                          f"{json.dumps(spec['log'])}")
    for v in (spec["low"], spec["high"]):  # bounds of the setting's own type (no 2.5 epochs, no
        valid_value(cfg, name, v, label)  # true) before Optuna sees them
    if "step" in spec:
        checked_step(spec, tp, label)
    try:
        kind = IntDistribution if tp is int else FloatDistribution
        return kind(spec["low"], spec["high"], log=spec.get("log", False),
                    step=spec.get("step", 1 if tp is int else None))
    except (ValueError, TypeError) as e:
        raise ConfigError("space", f"{label}: {e}")


def checked_step(spec: dict, tp, label: str) -> None:
    """A range's step: a positive number (whole for an integer setting) that divides the range
    evenly, so that the range's high end is a value the trials can draw."""
    step, low, high = spec["step"], spec["low"], spec["high"]
    whole = " whole" if tp is int else ""
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0 or \
            tp is int and step != int(step) or not math.isfinite(step):
        raise ConfigError("space", f"{label}: step must be a positive{whole} number, got "
                          f"{json.dumps(step)}")
    n = (high - low) / step
    if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):  # a step larger than the range too
        raise ConfigError("space", f"{label}: step {step:g} does not divide the range {low:g} "
                          f"to {high:g} into whole steps; expected a step that reaches "
                          f"{high:g} from {low:g}")


def valid_value(cfg: AblateConfig, name: str, value, label: str | None = None) -> None:
    """Refuse a value of the space that --config would refuse for the setting (a wrong type, a
    choice it does not have, a bad grid), or that it would only take converted ("yes" for true):
    a trial runs with the value as the space gives it."""
    label = label or repr(name)
    given = applied({name: value})[name]
    try:
        checked = getattr(from_dict(AblateConfig, {**to_dict(cfg), name: given}), name)
    except ConfigError as e:
        raise ConfigError("space", f"{label}: {json.dumps(value)} is not a valid value "
                          f"({e.message})")
    except TypeError:
        raise ConfigError("space", f"{label}: {json.dumps(value)} is not a valid value")
    if checked != given or type(checked) is bool and type(given) is not bool:
        plain = list(checked) if isinstance(checked, tuple) else checked
        raise ConfigError("space", f"{label}: {json.dumps(value)} is not a valid value (write "
                          f"it as {json.dumps(plain)})")
