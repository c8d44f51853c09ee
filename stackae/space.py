"""The search space of `stackae tune`: which grid settings a trial may change and which arms
draw each, their Optuna distributions, and a tuning's tune.json as read back (proposals.py draws
the trials from them).

A space is a JSON object of settings, each a range {"low": a, "high": b} ("log": true and
"step": s optional; an integer setting draws integers) or a list of values; a per-layer setting
(pretrain_lr, pretrain_epochs, noise) takes one value for every layer or a list per layer. A
setting may instead give each arm its own range or list, {"rbm": {...}, "xavier": {...}}, naming
every arm that draws it: the arms still get the same number of trials, at the same points of
their own ranges. Fine-tuning settings are tuned for every arm; pretraining ones only for
the pretrained arms whose layers read them (draws), at one budget (pretrain_budget). Settings
of both stages (layers, activation, precision, ...) are refused: a trial cannot change the
stacks and the classifier at once; so are settings no run of the grid reads (unused), whose
trials would differ in nothing.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
import warnings
from pathlib import Path

from .config import (OBJECTIVES, PER_NETWORK, RUN_ONLY, ConfigError, FinetuneConfig, PretrainConfig,
                     field_types, from_dict, to_dict)
from .config_grid import ABLATE_INITS, NOT_SWEPT, PER_CELL, AblateConfig, grid_name
from .runlog import RunError
from .schema import did_you_mean


def _names(stage: str, cls) -> set:
    return {grid_name(stage, f.name) for f in dataclasses.fields(cls)
            if f.name not in PER_CELL and f.name not in NOT_SWEPT}


# the grid settings only pretraining uses: they decide a stack, never the fine-tuning loop
PRETRAINING = frozenset((_names("pretrain", PretrainConfig) - _names("finetune", FinetuneConfig))
                        & {f.name for f in dataclasses.fields(AblateConfig)})
# tuned settings in which the arms of a trial may differ and still train as one K
PER_ARM = ({grid_name("finetune", n) for n in PER_NETWORK} - set(PER_CELL)) | PRETRAINING

SPACE_HELP = ("a JSON object of settings, each a range {\"low\": a, \"high\": b} (optionally "
              "\"log\": true, \"step\": s) or a list of values, or one of those per arm "
              "({\"rbm\": ..., \"xavier\": ...})")
RANGE = frozenset({"low", "high", "log", "step"})


def given_per_arm(spec) -> bool:
    """Whether a setting's spec gives each arm its own range or list ({arm: spec, ...}): an
    object that names an arm (an init) and no key of a range."""
    return (isinstance(spec, dict) and not RANGE & set(spec)
            and any(k in ABLATE_INITS for k in spec))


def tunable() -> list[str]:
    """The grid settings only fine-tuning uses: changing one leaves every stack as it is."""
    keep = _names("finetune", FinetuneConfig) - _names("pretrain", PretrainConfig)
    return sorted(keep & {f.name for f in dataclasses.fields(AblateConfig)})


def pretrain_budget(cfg: AblateConfig) -> str:
    """The label budget at which pretraining settings are tuned: the largest."""
    return max(cfg.labels, key=lambda b: math.inf if b == "all" else int(b))


# pretraining settings that only layers of some objectives read; every other one, every layer.
# (An RBM trains W alone, its decoder kept W's transpose, so `tied` changes none of its codes.)
OBJECTIVE_SETTINGS = {"noise": ("denoising",), "corruption": ("denoising",), "cd_k": ("rbm",),
                      "sparsity_target": ("sparse",), "sparsity_weight": ("sparse",),
                      "sparsity_penalty": ("sparse",), "contraction": ("contractive",),
                      "tied": tuple(o for o in OBJECTIVES if o != "rbm")}


def readers(name: str, joint: str = "and") -> str:
    """The objectives whose layers read pretraining setting `name` (OBJECTIVE_SETTINGS), in
    words: 'denoising', 'plain, denoising, sparse and contractive'."""
    objectives = OBJECTIVE_SETTINGS[name]
    return ", ".join(objectives[:-1]) + f" {joint} " * (len(objectives) > 1) + objectives[-1]


def unused(name: str, space: dict, cfg: AblateConfig) -> str | None:
    """Why no run of the grid would read setting `name` (its trials would differ in nothing),
    or None."""
    if name in OBJECTIVE_SETTINGS and not set(OBJECTIVE_SETTINGS[name]) & set(cfg.inits):
        return (f"is read by {readers(name)} layers only, and no arm of the grid is "
                f"{readers(name, 'or')} (inits: {', '.join(cfg.inits)})")
    stage = name.split("_")[0]
    if name.endswith("_momentum") and getattr(cfg, f"{stage}_optimizer") == "adam" and \
            f"{stage}_optimizer" not in space:
        return (f"is read by SGD only, and {stage}_optimizer is adam; tune {stage}_optimizer "
                f"beside it, or leave it out")
    return None


def draws(arm: str, name: str) -> bool:
    """Whether `arm` ever draws setting `name`: every arm draws the fine-tuning settings, a
    pretrained arm the pretraining ones its layers read (noise only a denoising arm, cd_k only
    an RBM one: OBJECTIVE_SETTINGS), a random-init arm none."""
    if name not in PRETRAINING:
        return True
    return arm in OBJECTIVE_SETTINGS.get(name, OBJECTIVES)


def drawn(settings: dict, arm: str) -> dict:
    """The settings `arm` draws among `settings` (a trial recorded by an earlier version, which
    drew every pretraining setting for every pretrained arm, may hold others)."""
    return {k: v for k, v in settings.items() if draws(arm, k)}


def not_drawn(arm: str, name: str) -> str:
    """Why `arm` never draws setting `name` (draws is False)."""
    if arm not in OBJECTIVES:
        return f"{arm!r} is a random-init arm, which draws no pretraining settings"
    return f"{arm!r} layers never read it ({readers(name)} layers only)"


def pretrains_own(dists: dict, arm: str) -> bool:
    """Whether the arm's trials at the pretraining budget pretrain stacks of their own: it draws
    a pretraining setting. (One that draws none starts every trial from the grid's stacks.)"""
    return any(k in PRETRAINING and draws(arm, k) for k in dists)


def arm_space(dists: dict, arm: str, pretraining: bool) -> dict:
    """The part of the space an arm's trials draw from, each setting in the arm's own range where
    the space gives arms their own: fine-tuning settings always, pretraining ones for a
    pretrained arm at the budget that tunes them."""
    return {k: v for k, v in arm_view(dists, arm).items()
            if draws(arm, k) and (pretraining or k not in PRETRAINING)}


def arm_view(dists: dict, arm: str) -> dict:
    """Every setting of the space as `arm` sees it (its own range where it has one; another
    arm's for a setting it never draws): the dimensions of the Sobol start (spread), in the same
    order for every arm, so that the arms' trial n is the same point of each one's ranges."""
    return {k: (v.get(arm, next(iter(v.values()))) if isinstance(v, dict) else v)
            for k, v in dists.items()}


def default_space(cfg: AblateConfig) -> dict:
    """The fine-tuning learning rate, from a tenth to ten times the grid's, on a log scale."""
    return {"finetune_lr": {"low": cfg.finetune_lr / 10, "high": cfg.finetune_lr * 10,
                            "log": True}}


def not_tunable(name: str, types: dict) -> str:
    """Why the space cannot tune `name`."""
    if name not in types:
        return "is not a setting"
    if name in RUN_ONLY or name == "device":
        return "is a setting of how the runs execute, not of what they learn"
    if name not in _names("pretrain", PretrainConfig) | _names("finetune", FinetuneConfig):
        return "is a setting of the grid (which arms, seeds, budgets and depths it runs)"
    return "is a setting of both stages (it changes the stacks and the classifier alike)"


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


def no_duplicates(pairs: list) -> dict:
    seen = [k for k, _ in pairs]
    twice = sorted({k for k in seen if seen.count(k) > 1})
    if twice:
        raise ConfigError("space", f"names {twice[0]!r} twice in one object; expected each "
                          f"setting, and each arm of a setting, once")
    return dict(pairs)


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


def read_tuning(out: Path) -> dict:
    """A tuning folder's tune.json, checked to be the object `stackae tune` writes."""
    path = Path(out) / "tune.json"
    try:
        saved = json.loads(path.read_text())
    except OSError as e:
        raise RunError(f"cannot read {path}: {e.strerror}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        saved = None
    if not isinstance(saved, dict) or not {"space", "trials", "tune_seeds"} <= set(saved):
        raise RunError(f"{path} is damaged: expected the JSON object stackae tune writes (space, "
                       f"trials, tune_seeds, choices); restore it, or tune again in a new folder")
    return saved


def from_json(settings: dict) -> dict:
    """Settings read back from JSON: lists become the tuples the configs hold."""
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in settings.items()}


def applied(settings: dict) -> dict:
    """Settings as a grid holds them: lists become tuples, and one number for a per-layer setting
    (pretrain_lr, pretrain_epochs, noise) stands for every layer."""
    types = field_types(AblateConfig)

    def one(name, v):
        if isinstance(v, (list, tuple)):
            return tuple(v)
        return (v,) if typing.get_origin(types.get(name)) is tuple else v
    return {k: one(k, v) for k, v in settings.items()}


def shown(settings: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in settings.items())
