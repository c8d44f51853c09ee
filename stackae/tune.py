"""Equal-budget tuning: every arm of a grid gets the same number of trials at every label budget,
each trial judged on validation error alone, before the chosen settings run as a paired ablation.

    stackae tune --trials 20 --space space.json --out runs/tune/demo

The search space is a JSON object of grid settings that one stage alone uses: fine-tuning ones
(learning rate, batch size, epochs, dropout, ...) and, for the pretrained arms, pretraining ones
(learning rate, epochs, noise, ...):

    {"finetune_lr": {"low": 0.01, "high": 1.0, "log": true},
     "finetune_batch_size": [20, 64, 128],
     "dropout": {"low": 0.0, "high": 0.5},
     "noise": [[0.1, 0.2, 0.3], [0.25, 0.25, 0.25]]}

A range of an integer setting draws integers (`step` optional), a list draws one of its values.
Optuna's TPE sampler proposes the trials through its ask/tell interface; a study is rebuilt from
the finished trials before every proposal (with a seed fixed by the trial's number), so an
interrupted tuning resumes to the same choices. A trial fine-tunes the arm on the tuning seeds
with the test set never evaluated (read_test off). Trials run in rounds of `--trials-at-once`
per arm (1 on a CPU, 5 on a GPU): a round's proposals are made from the trials of earlier rounds,
those of the same round counted as running (TPE's constant liar). Every trial of every arm in a
round runs at once, and those whose settings differ at most in settings one loop applies per
network (tune.PER_ARM: learning rate, dropout, input dropout, max-norm, and every pretraining
setting, which only decides the stack a network starts from) train together as one K-network
loop (the sampler's random start, seeded alike for every arm, proposes the same settings to
every arm). Then each (arm, budget)
runs over all seeds with its chosen settings, test error read once per cell, and the folder is
an ordinary ablation folder.

Pretraining settings are tuned at one label budget, the largest (tune.pretrain_budget), and the
pretrained arm's choice there is its pretraining at every budget: one stack per objective and
seed, shared by every budget as in `stackae ablate`. That budget is tuned first; each of its
trials pretrains its own stacks of the tuning seeds (in the trial's folder), the chosen trial's
stacks are reused, and the other budgets tune the fine-tuning settings alone. A random-init arm
has no pretraining: its trials draw the fine-tuning settings only, as many trials as any arm.
Without pretraining settings in the space, the grid's stacks are pretrained once and shared by
every trial and by the final runs.

    <out>/tune.json                          space, trials per arm and budget, tuning seeds; choices
    <out>/tune/n<budget>/trials.jsonl        one line per finished trial of an arm: its settings,
                                             the mean validation error and each seed's
    <out>/tune/n<budget>/trial-<k>/          trial k of every arm: settings.json (arm -> settings),
                                             the cells' folders and results.jsonl, and pretrain/
                                             (the trial's stacks, where it tunes pretraining)
    <out>/runs/, results.jsonl, REPORT.md    the final paired ablation, as `stackae ablate` writes
"""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
import shutil
import typing
import warnings
from pathlib import Path

from .config import PER_CELL, PER_NETWORK, NOT_SWEPT, AblateConfig, ConfigError, PretrainConfig
from .config import OBJECTIVES, FinetuneConfig
from .config import field_types, grid_name
from .grid import Cell
from .claims import ClaimError
from .runlog import Diverged, write_json
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
              "\"log\": true, \"step\": s) or a list of values")


def tunable() -> list[str]:
    """The grid settings only fine-tuning uses: changing one leaves every stack as it is."""
    keep = _names("finetune", FinetuneConfig) - _names("pretrain", PretrainConfig)
    return sorted(keep & {f.name for f in dataclasses.fields(AblateConfig)})


def pretrain_budget(cfg: AblateConfig) -> str:
    """The label budget at which pretraining settings are tuned: the largest."""
    return max(cfg.labels, key=lambda b: math.inf if b == "all" else int(b))


def arm_space(dists: dict, arm: str, pretraining: bool) -> dict:
    """The part of the space an arm's trials draw from: fine-tuning settings always, pretraining
    ones for a pretrained arm at the budget that tunes them."""
    return {k: v for k, v in dists.items()
            if k not in PRETRAINING or (pretraining and arm in OBJECTIVES)}


def default_space(cfg: AblateConfig) -> dict:
    """The fine-tuning learning rate, from a tenth to ten times the grid's, on a log scale."""
    return {"finetune_lr": {"low": cfg.finetune_lr / 10, "high": cfg.finetune_lr * 10,
                            "log": True}}


def distributions(space: dict, cfg: AblateConfig) -> dict:
    """Optuna distributions for `space`, every bound checked as a setting of the grid."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)
    if not isinstance(space, dict) or not space:
        raise ConfigError("space", f"expected {SPACE_HELP}")
    types, allowed, out = field_types(AblateConfig), tunable() + sorted(PRETRAINING), {}
    for name, spec in space.items():
        if name not in allowed:
            why = ("is a setting of both stages (it changes the stacks and the classifier alike)"
                   if name in types else "is not a setting")
            raise ConfigError("space", f"{name!r} {why}; tunable: fine-tuning settings such as "
                              f"finetune_lr, finetune_batch_size, dropout, and pretraining ones "
                              f"such as pretrain_lr, pretrain_epochs, noise"
                              f"{did_you_mean(name, allowed)}")
        if name in PRETRAINING and not any(i in OBJECTIVES for i in cfg.inits):
            raise ConfigError("space", f"{name!r} is a pretraining setting and no arm of the grid "
                              f"is pretrained (inits: {', '.join(cfg.inits)})")
        tp = types[name]
        if typing.get_origin(tp) is tuple:  # per layer: a range draws one value for every layer
            tp = typing.get_args(tp)[0]
        if isinstance(spec, list) and spec:
            values = [tuple(v) if isinstance(v, list) else v for v in spec]
            with warnings.catch_warnings():  # tuples (per-layer values) cannot go into Optuna's
                warnings.simplefilter("ignore")  # database storage; these studies live in memory
                out[name] = CategoricalDistribution(values)
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) <= {"low", "high", "log",
                                                                          "step"}:
            if tp not in (int, float):
                raise ConfigError("space", f"{name!r} takes a list of values, not a range")
            try:
                kind = IntDistribution if tp is int else FloatDistribution
                out[name] = kind(spec["low"], spec["high"], log=bool(spec.get("log", False)),
                                 step=spec.get("step", 1 if tp is int else None))
            except (ValueError, TypeError) as e:
                raise ConfigError("space", f"{name!r}: {e}")
            values = [spec["low"], spec["high"]]
        else:
            raise ConfigError("space", f"{name!r}: expected a range {{\"low\": a, \"high\": b}} "
                              f"or a non-empty list of values, got {json.dumps(spec)}")
        for v in values:  # each bound or value must make a valid grid
            try:
                dataclasses.replace(cfg, **applied({name: v}))
            except ConfigError as e:
                raise ConfigError("space", f"{name!r}: {v!r} is not a valid value ({e})")
            except TypeError:
                raise ConfigError("space", f"{name!r}: {v!r} is not a valid value")
    if not set(out) - PRETRAINING:
        raise ConfigError("space", "needs at least one fine-tuning setting (such as finetune_lr): "
                          "every arm tunes those at every budget, and a random-init arm nothing "
                          "else")
    return out


def read_space(value) -> dict:
    """--space: a JSON file or JSON text."""
    text = value
    if not str(value).lstrip().startswith("{"):
        try:
            text = Path(value).read_text()
        except OSError as e:
            raise ConfigError("space", f"cannot read {value}: {e.strerror}; expected a JSON file "
                              f"or JSON text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("space", f"is not valid JSON ({e.msg} at line {e.lineno}); expected "
                          f"{SPACE_HELP}")


def trials_of(folder: Path, arm: str) -> list[dict]:
    """The finished trials of one arm at one budget (folder), in order of their numbers."""
    path, found = folder / "trials.jsonl", {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                if rec["arm"] == arm:
                    found[rec["number"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
    return [found[k] for k in sorted(found)]


def propose(dists: dict, done: list[dict], number: int, seed: int,
            pending: list[dict] = ()) -> dict:
    """Trial `number`'s settings: TPE over the finished trials, seeded by the trial's number; the
    `pending` settings (trials of the same round, proposed but not finished) count as running,
    with the constant liar keeping a round's proposals apart."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import numpy as np
    mixed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])  # well spread
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=mixed, constant_liar=bool(pending))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for t in done:
        study.add_trial(optuna.trial.create_trial(params=from_json(t["settings"]),
                                                  distributions=dists, value=t["val_error"]))
    for settings in pending:
        study.add_trial(optuna.trial.create_trial(params=from_json(settings), distributions=dists,
                                                  state=optuna.trial.TrialState.RUNNING))
    params = study.ask(dists).params
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}


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


def trial_config(cfg: AblateConfig, arms: list, budget: str, seeds, settings: dict) -> AblateConfig:
    return dataclasses.replace(cfg, inits=tuple(arms), labels=(budget,), seeds=tuple(seeds),
                               **applied(settings))


def tune(cfg: AblateConfig, out: Path, space: dict, trials: int, seeds: tuple, device,
         say, at_once: int = 1) -> dict:
    """Run every (arm, budget)'s trials not yet finished; return the choices (tune.json's). The
    trials run in rounds of `at_once` per arm, proposed from the trials of earlier rounds; a
    round's trials of every arm that differ at most in PER_ARM settings train together as one
    K-network loop. With pretraining settings in the space, their budget (pretrain_budget) runs
    first and fixes each pretrained arm's pretraining for the others."""
    from .ablate import append_result, run_jobs
    dists = distributions(space, cfg)
    first = pretrain_budget(cfg) if PRETRAINING & set(dists) else None
    choices, diverged = {}, set()
    fixed = {arm: {} for arm in cfg.inits}  # each arm's chosen pretraining, once known
    for budget in sorted(cfg.labels, key=lambda b: b != first):
        folder = out / "tune" / f"n{budget}"
        pretraining = budget == first
        done = {arm: trials_of(folder, arm) for arm in cfg.inits}
        for start in range(0, trials, at_once):
            numbers = range(start, min(start + at_once, trials))
            todo = [(n, a) for n in numbers for a in cfg.inits
                    if n not in {t["number"] for t in done[a]}]
            if not todo:
                continue
            proposals = {}
            for n in numbers:  # every trial of the round written before any runs
                asked = folder / f"trial-{n:03d}" / "settings.json"  # arm -> settings
                proposals[n] = json.loads(asked.read_text()) if asked.exists() else {}
                for arm in cfg.inits:
                    if arm not in proposals[n] and (n, arm) in todo:
                        proposals[n][arm] = propose(
                            arm_space(dists, arm, pretraining),
                            [t for t in done[arm] if t["number"] < start], n, cfg.seeds[0],
                            [proposals[m][arm] for m in numbers if m < n])
                asked.parent.mkdir(parents=True, exist_ok=True)
                write_json(asked, proposals[n])
            runs = {(n, a): applied({**fixed[a], **proposals[n][a]}) for n, a in todo}

            def jobs(keys, per):
                return [trial_job(out, folder / f"trial-{n:03d}", Cell(a, d, budget, s),
                                  pretraining, per[n, a])
                        for s in seeds for d in cfg.depth_list for n, a in keys]
            for keys, per in one_k_groups(runs):
                arms = sorted({a for _, a in keys}, key=cfg.inits.index)
                try:
                    run_jobs(trial_config(cfg, arms, budget, seeds, runs[keys[0]]), jobs(keys, per),
                             device, read_test=False)
                except Diverged:  # find which trial blew up: each alone
                    for n, a in keys:
                        try:
                            run_jobs(trial_config(cfg, [a], budget, seeds, runs[n, a]),
                                     jobs([(n, a)], per), device, read_test=False)
                        except Diverged:
                            diverged.add((budget, n, a))
            for n, arm in todo:
                trial = folder / f"trial-{n:03d}"
                if (budget, n, arm) in diverged:  # scored as the worst possible error
                    errors, value = None, 1.0
                else:
                    errors = [json.loads((trial / Cell(arm, d, budget, s).id / "result.json")
                                         .read_text())["best_val_error"]
                              for s in seeds for d in cfg.depth_list]
                    value = sum(errors) / len(errors)
                rec = {"arm": arm, "number": n, "settings": proposals[n][arm],
                       "val_error": value if math.isfinite(value) else 1.0, "per_seed": errors,
                       "diverged": (budget, n, arm) in diverged}
                append_result(folder / "trials.jsonl", rec)
                done[arm].append(rec)
                best = min(done[arm], key=lambda t: (t["val_error"], t["number"]))
                outcome = ("diverged (scored 100%)" if rec["diverged"]
                           else f"validation error {100 * value:.2f}%")
                say(f"tune {arm} at {budget} labels: trial {n + 1}/{trials} {outcome} "
                    f"({shown(proposals[n][arm])}); best so far {100 * best['val_error']:.2f}%")
        for arm in cfg.inits:
            best = min(done[arm][:trials], key=lambda t: (t["val_error"], t["number"]))
            choices.setdefault(arm, {})[budget] = {"settings": {**fixed[arm], **best["settings"]},
                                                  "trial": best["number"],
                                                  "val_error": best["val_error"]}
            if pretraining and arm in OBJECTIVES:
                fixed[arm] = {k: v for k, v in best["settings"].items() if k in PRETRAINING}
                reuse_stacks(folder / f"trial-{best['number']:03d}" / "pretrain", out)
    return {arm: {b: per[b] for b in cfg.labels} for arm, per in choices.items()}


def trial_job(out: Path, trial: Path, cell: Cell, pretraining: bool, settings: dict):
    """One cell of a trial: its folder and results.jsonl in the trial's folder, its stacks the
    trial's own where it tunes pretraining, else the grid's."""
    from .ablate import Job
    return Job(cell, trial / cell.id, trial / "results.jsonl",
               trial / "pretrain" if pretraining else out / "runs" / "pretrain",
               tuple(sorted(settings.items())))


def reuse_stacks(chosen: Path, out: Path) -> None:
    """The chosen trial's finished stacks (the tuning seeds', pretrained with the settings every
    budget now uses) become the grid's, so they are not pretrained again."""
    if not chosen.is_dir():
        return
    for stack in sorted(chosen.iterdir()):
        target = out / "runs" / "pretrain" / stack.name
        if (stack / "stack.pt").exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(stack, target.with_name(f".{stack.name}.copying"), dirs_exist_ok=True)
            target.with_name(f".{stack.name}.copying").rename(target)


def shown(settings: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in settings.items())


def one_k_groups(settings: dict) -> list[tuple[list, dict]]:
    """The runs ({key: settings}, a key an arm or a (trial, arm)) whose settings differ at most in
    PER_ARM ones, which one K-network loop applies per network: each group (its keys, and each
    key's PER_ARM settings) trains together."""
    groups = {}
    for key, s in settings.items():
        rest = {k: v for k, v in s.items() if k not in PER_ARM}
        groups.setdefault(json.dumps(rest, sort_keys=True), []).append(key)
    return [(keys, {k: {n: v for n, v in settings[k].items() if n in PER_ARM} for k in keys})
            for keys in groups.values()]


def final(cfg: AblateConfig, out: Path, cells: list[Cell], choices: dict, device, say) -> None:
    """Each (arm, budget)'s cells over every seed with its chosen settings, test read once; arms
    whose choices differ at most in PER_ARM settings train together."""
    from .ablate import run_cells
    for budget in cfg.labels:
        chosen = {arm: applied(choices[arm][budget]["settings"]) for arm in cfg.inits}
        for together, per_arm in one_k_groups(chosen):
            mine = [c for c in cells if c.init in together and c.budget == budget]
            if mine:
                run_cells(dataclasses.replace(cfg, **chosen[together[0]]), out, mine, device,
                          say, per_arm=per_arm)


def setup(cfg: AblateConfig, out: Path, resuming: bool, space, trials, seeds,
          at_once: int | None = None, device=None) -> dict:
    """tune.json's space, trials, tuning seeds and trials at once: those given (None = not given)
    agree with a resumed tuning's, the rest come from it or the defaults (trials at once: 1 on a
    CPU, whose loop holds few networks, 5 on a GPU); all checked before any folder."""
    path = out / "tune.json"
    saved = json.loads(path.read_text()) if resuming and path.exists() else {}
    if saved:
        saved.setdefault("trials_at_once", 1)  # tunings from before rounds ran one at a time
    if resuming and not saved and (out / "results.jsonl").exists():
        raise ClaimError(f"{out} holds a `stackae ablate` run (its cells ran untuned); resume it "
                         f"with stackae ablate --out {out} --resume")
    if isinstance(space, (str, Path)):
        space = read_space(space)
    asked = {"space": space, "trials": trials,
             "tune_seeds": None if seeds is None else [int(s) for s in seeds],
             "trials_at_once": at_once}
    for name, value in asked.items():
        if saved and value is not None and value != saved[name]:
            raise ConfigError(name, f"{json.dumps(value)} differs from the tuning being resumed "
                                    f"({json.dumps(saved[name])} in {path})")
    chosen = {name: next(v for v in (saved.get(name), asked[name], default) if v is not None)
              for name, default in (("space", default_space(cfg)), ("trials", 20),
                                    ("tune_seeds", list(cfg.seeds[:2])),
                                    ("trials_at_once",
                                     5 if getattr(device, "type", device) == "cuda" else 1))}
    for name in ("trials", "trials_at_once"):
        if chosen[name] < 1:
            raise ConfigError(name, f"must be at least 1, got {chosen[name]}")
    if not chosen["tune_seeds"]:
        raise ConfigError("tune_seeds", "needs at least one seed")
    try:  # the tuning seeds must make a valid grid of their own
        trial_config(cfg, list(cfg.inits), cfg.labels[0], chosen["tune_seeds"], {})
    except ConfigError as e:
        raise ConfigError("tune_seeds", str(e))
    if PRETRAINING & set(distributions(chosen["space"], cfg)):
        chosen["pretrain_budget"] = pretrain_budget(cfg)
    return chosen


def command(cfg: AblateConfig, out: Path, chosen: dict) -> str:
    """The `stackae tune` command line that reruns this tuning into `out`."""
    from .ablate import command as grid_command
    return ("stackae tune " + grid_command(cfg, out).split(" ", 2)[2]
            + f" --trials {chosen['trials']} --space {shlex.quote(json.dumps(chosen['space']))}"
            + f" --tune-seeds {','.join(map(str, chosen['tune_seeds']))}"
            + f" --trials-at-once {chosen['trials_at_once']}")
