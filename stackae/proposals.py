"""The settings of `stackae tune`'s trials, drawn from the space's distributions (space.py): a
scrambled Sobol start that covers every range evenly, then Optuna's TPE sampler over the
finished trials; the pruner that stops a trial's network trailing the finished ones (Optuna's
median rule), with the finished trials each network is judged against (pruners); and the
warning for a choice at the edge of its range.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from .config_grid import AblateConfig
from .space import from_json, given_per_arm


# trials proposed before TPE models the finished ones (TPE's own default): a scrambled Sobol
# sequence over the space where a tuning's tune.json says "startup": "sobol", random draws (TPE's
# own start) in tunings from before it did
STARTUP = 10
# finished trials a pruner needs before it stops any (Optuna's MedianPruner's default)
PRUNE_STARTUP = 5


def propose(dists: dict, done: list[dict], number: int, seed: int,
            pending: list[dict] = (), startup: str = "sobol", whole: dict | None = None) -> dict:
    """Trial `number`'s settings. The first STARTUP: point `number` of a scrambled Sobol sequence
    seeded by `seed` over `whole` (every setting of the space, as the arm sees it: arm_view;
    default `dists`), kept to the arm's `dists`, so every arm draws the same fine-tuning
    settings (the same point of its own ranges, where arms have their own) and a few trials
    still cover each range evenly where random draws would clump. Later ones: TPE over the
    finished trials, seeded by the trial's number (a pruned one told as pruned, its score cut
    short: TPE counts it among the good trials only after every trial that ran its course); the
    `pending` settings (trials of the same round, proposed but not finished) count as running,
    with the constant liar keeping a round's proposals apart."""
    if startup == "sobol" and number < STARTUP:
        point = spread(whole or dists, number, seed)
        return {k: point[k] for k in dists}
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import numpy as np
    mixed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])  # well spread
    with warnings.catch_warnings():  # constant_liar and multivariate are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate (settings drawn jointly: a rate that suits a batch size) named, not left
        # to the default, which Optuna 5 turned on: a tuning proposes alike with any version
        sampler = optuna.samplers.TPESampler(seed=mixed, constant_liar=bool(pending),
                                             multivariate=True, n_startup_trials=STARTUP)
    study = optuna.create_study(direction="minimize", sampler=sampler)

    def params(settings):  # a trial of an earlier version may hold a setting the arm now skips
        return {k: v for k, v in from_json(settings).items() if k in dists}
    for t in done:  # a pruned trial as Optuna tells one: TPE ranks it after every finished one
        told = ({"state": optuna.trial.TrialState.PRUNED,
                 "intermediate_values": {1: t["val_error"]}} if t.get("pruned")
                else {"value": t["val_error"]})
        study.add_trial(optuna.trial.create_trial(params=params(t["settings"]),
                                                  distributions=dists, **told))
    for settings in pending:
        study.add_trial(optuna.trial.create_trial(params=params(settings), distributions=dists,
                                                  state=optuna.trial.TrialState.RUNNING))
    params = study.ask(dists).params
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


def proposer(number: int, startup: str = "sobol") -> str:
    """What proposes trial `number` (propose), as its trials.jsonl line records it: Optuna's
    proposals can change between its versions, so a TPE trial names the version."""
    if startup == "sobol" and number < STARTUP:
        return "sobol"
    import optuna
    return f"{'random' if number < STARTUP else 'tpe'} (optuna {optuna.__version__})"


def pruner(finished: list[list[float]], after: int):
    """Whether a trial's network stops, given its validation errors so far (one per epoch):
    Optuna's MedianPruner, from epoch `after` on, over `finished` (the validation error curves of
    the finished trials' networks in the same place: arm, budget, depth and seed). It stops one
    whose best error so far is worse than the median of theirs at the same epoch, once
    PRUNE_STARTUP trials have finished; a trial pruned or diverged is not among them."""
    import optuna
    from optuna.trial import TrialState, create_trial
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rule = optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP, n_warmup_steps=after)
    study = optuna.create_study(direction="minimize", pruner=rule)
    for curve in filter(None, finished):  # a trial of 0 epochs has no curve to compare
        study.add_trial(create_trial(value=min(curve),
                                     intermediate_values=dict(enumerate(curve, 1))))

    def stops(errors: list[float]) -> bool:
        running = create_trial(state=TrialState.RUNNING,
                               intermediate_values=dict(enumerate(errors, 1)))
        return bool(rule.prune(study, running))
    return stops


def rate_schedule(cfg: AblateConfig, settings: dict) -> int | None:
    """What a trial's learning rate at an epoch depends on, beyond the rate itself: its number of
    epochs under a cosine schedule (None under a constant one). Trials whose curves the pruner
    compares share it."""
    s = {"finetune_epochs": cfg.finetune_epochs,
         "finetune_lr_schedule": cfg.finetune_lr_schedule, **settings}
    return s["finetune_epochs"] if s["finetune_lr_schedule"] == "cosine" else None


def pruners(cfg: AblateConfig, folder: Path, done: dict, after: int):
    """A trial job's pruner (proposals.pruner): from epoch `after` on, its network stops when
    it trails the arm's finished trials (in `done`, neither pruned nor diverged) at the same
    depth and seed, as Optuna's median rule judges. Under a cosine schedule only trials of as
    many epochs compare: the rate at an epoch depends on them, and a long run, its rate still
    high, trails a short one mid-way without being worse. The same trials at every resume, so
    an interrupted tuning prunes as it would have."""
    made = {}

    def prune(job):
        c = job.cell
        trial = json.loads((job.folder.parent / "settings.json").read_text())[c.init]
        mine = rate_schedule(cfg, trial)
        if (c.init, c.depth, c.seed, mine) not in made:
            curves = [json.loads((folder / f"trial-{t['number']:03d}" / c.id / "result.json")
                                 .read_text())["curves"]["val_error"]
                      for t in done[c.init] if not (t["diverged"] or t.get("pruned"))
                      and rate_schedule(cfg, t["settings"]) == mine]
            made[c.init, c.depth, c.seed, mine] = pruner(curves, after)
        return made[c.init, c.depth, c.seed, mine]
    return prune


def spread(dists: dict, number: int, seed: int) -> dict:
    """Point `number` (< 16) of a scrambled Sobol sequence seeded by `seed`, one dimension per
    setting in name order, each coordinate mapped into its distribution (a log range on the log
    scale, a step or an integer range and a list as equal shares of [0, 1))."""
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from scipy.stats import qmc
    names = sorted(dists)
    u = qmc.Sobol(len(names), scramble=True, seed=seed).random_base2(4)[number]
    out = {}
    for name, x in zip(names, u):
        d = dists[name]
        if isinstance(d, CategoricalDistribution):
            v = d.choices[min(int(x * len(d.choices)), len(d.choices) - 1)]
        elif d.log:
            v = math.exp(math.log(d.low) + x * (math.log(d.high) - math.log(d.low)))
            v = min(max(round(v), d.low), d.high) if isinstance(d, IntDistribution) else v
        elif d.step:
            n = int(round((d.high - d.low) / d.step)) + 1  # the values the range holds
            v = d.low + min(int(x * n), n - 1) * d.step
            v = int(v) if isinstance(d, IntDistribution) else min(v, d.high)
        else:
            v = d.low + x * (d.high - d.low)
        if isinstance(v, float):
            v = float(f"{v:.12g}")  # 0.4, not 0.1 + 3 * 0.1's 0.4000000000000001
        out[name] = list(v) if isinstance(v, tuple) else v
    return out


def at_edge(space: dict, choices: dict, so_far: bool = False) -> list[str]:
    """A warning for each chosen value in the outer tenth of its range (on the log scale where
    the range is log; the arm's own range where the space gives arms their own): the best
    setting may lie beyond the range searched. `so_far`: the choices are a running tuning's
    best trials so far, and the warning says so."""
    found = {}
    for arm, per_budget in choices.items():
        for budget, choice in per_budget.items():
            for name, v in choice["settings"].items():
                spec = space.get(name)
                spec = spec.get(arm) if given_per_arm(spec) else spec
                if not isinstance(spec, dict) or not spec["high"] > spec["low"]:
                    continue
                scale = math.log if spec.get("log") else float
                at = (scale(v) - scale(spec["low"])) / (scale(spec["high"]) - scale(spec["low"]))
                if at <= 0.1 or at >= 0.9:
                    bounds = (f"{spec['low']:g} to {spec['high']:g}"
                              + (", log" if spec.get("log") else "")
                              + (f", {arm}'s own" if given_per_arm(space[name]) else ""))
                    key = (name, v, budget, "top" if at >= 0.9 else "bottom", bounds)
                    found.setdefault(key, []).append(arm)
    return [(f"the best trial so far of {' and '.join(arms)} has" if so_far
             else f"{' and '.join(arms)} chose")
            + f" {name} {v:.3g} at {budget} labels, in the {side} tenth of "
            f"its search range ({bounds}): the best may lie beyond it; widen the range"
            for (name, v, budget, side, bounds), arms in found.items()]
