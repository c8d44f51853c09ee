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
from pathlib import Path

from .config import OBJECTIVES, PER_NETWORK, FinetuneConfig, PretrainConfig, field_types
from .config_grid import ABLATE_INITS, NOT_SWEPT, PER_CELL, AblateConfig, grid_name
from .runlog import RunError


def stage_settings(stage: str, cls) -> set:
    """The grid names of a stage's settings that a grid sweeps (not set per cell)."""
    return {grid_name(stage, f.name) for f in dataclasses.fields(cls)
            if f.name not in PER_CELL and f.name not in NOT_SWEPT}


# the grid settings only pretraining uses: they decide a stack, never the fine-tuning loop
PRETRAINING = frozenset((stage_settings("pretrain", PretrainConfig)
                         - stage_settings("finetune", FinetuneConfig))
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
    keep = stage_settings("finetune", FinetuneConfig) - stage_settings("pretrain", PretrainConfig)
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
