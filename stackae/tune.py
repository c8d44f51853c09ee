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
A setting may give each arm its own range or list ({"rbm": {...}, "xavier": {...}}, naming every
arm that draws it), for arms whose good values lie apart; they keep the same number of trials.
The first 10 trials are the points of a scrambled Sobol sequence over the space (seeded by the
grid's first seed): a few trials cover every range evenly, where random draws clump. Later ones
come from Optuna's TPE sampler through its ask/tell interface, a study rebuilt from the finished
trials before every proposal (with a seed fixed by the trial's number). Either way an
interrupted tuning resumes to the same choices. A trial fine-tunes the arm on the tuning seeds
with the test set never evaluated (read_test off). Trials run in rounds of `--trials-at-once`
per arm (1 on a CPU, 5 on a GPU): a round's proposals are made from the trials of earlier rounds,
those of the same round counted as running (TPE's constant liar). Every trial of every arm in a
round runs at once: those whose settings differ at most in settings one loop applies per network
(space.PER_ARM: learning rate, weight decay, dropout, input dropout, max-norm, and every
pretraining setting, which only decides the stack a network starts from) fine-tune together as
one K-network loop, up to the batch cap, and their stacks that differ only in seed pretrain
together (the Sobol start gives every arm the same fine-tuning settings, or the same points of
its own ranges where the space gives it its own: a per-arm batch size or epochs then trains
apart). Then each (arm, budget) runs over all seeds with its chosen settings, test error read once
per cell, and the folder is an ordinary ablation folder. A tuning seed's cell is the chosen trial's
own run (the same settings, seed and stack: the same training), copied with its test error read once
on its selected model rather than trained again (tune_final.py). The report warns of a choice in
the outer tenth of its range (proposals.at_edge). Tunings from before the Sobol start (tune.json
without "startup") resume with TPE's random start, as they began.

Pretraining settings are tuned at one label budget, the largest (space.pretrain_budget), and the
pretrained arm's choice there is its pretraining at every budget: one stack per objective and
seed, shared by every budget as in `stackae ablate`. That budget is tuned first; each of its
trials pretrains its own stacks of the tuning seeds (in the trial's folder), each arm's chosen
trial's stacks are reused, and the other budgets tune the fine-tuning settings alone. A
random-init arm has no pretraining: its trials draw the fine-tuning settings only, as many trials
as any arm. A pretrained arm draws only the pretraining settings its layers read (noise a
denoising arm, cd_k an RBM one: space.draws); one that draws none, like every arm of a space
without pretraining settings, starts every trial from the grid's stacks, pretrained once and
shared by every trial and by the final runs.

    <out>/tune.json                          space, trials per arm and budget, tuning seeds; choices
    <out>/tune/n<budget>/trials.jsonl        one line per finished trial of an arm: its settings,
                                             the mean validation error and each seed's, and what
                                             proposed it (proposals.proposer)
    <out>/tune/n<budget>/trial-<k>/          trial k of every arm: settings.json (arm -> settings;
                                             "proposed_by": arm -> proposer),
                                             the cells' folders and results.jsonl, and pretrain/
                                             (the trial's stacks, where it tunes pretraining)
    <out>/runs/, results.jsonl, REPORT.md    the final paired ablation, as `stackae ablate` writes
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from .config import OBJECTIVES
from .config_grid import AblateConfig
from .grid import Cell
from .proposals import propose, proposer, pruners
from .results import append_result
from .runlog import RESUME_NAME, Diverged, RunError, copy_run_folder, write_json
from .space import (PER_ARM, PRETRAINING, applied, arm_space, arm_view, drawn, pretrain_budget,
                    pretrains_own, shown)
from .space_read import distributions

PROPOSED_BY = "proposed_by"  # settings.json's and trials.jsonl's record of what proposed a trial


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


def trial_config(cfg: AblateConfig, arms: list, budget: str, seeds, settings: dict) -> AblateConfig:
    return dataclasses.replace(cfg, inits=tuple(arms), labels=(budget,), seeds=tuple(seeds),
                               **applied(settings))


def tune(cfg: AblateConfig, out: Path, space: dict, trials: int, seeds: tuple, device,
         say, at_once: int = 1, startup: str = "sobol", prune_after: int = 0) -> dict:
    """Run every (arm, budget)'s trials not yet finished; return the choices (tune.json's). The
    trials run in rounds of `at_once` per arm (ask_round, run_round). With pretraining settings
    in the space, their budget (pretrain_budget) runs first and fixes each pretrained arm's
    pretraining for the others. With `prune_after`, a trial's network that trails the arm's
    finished trials from that epoch on stops there (pruners)."""
    dists = distributions(space, cfg)
    first = pretrain_budget(cfg) if PRETRAINING & set(dists) else None
    choices, fixed = {}, {arm: {} for arm in cfg.inits}  # fixed: each arm's chosen pretraining
    for budget in sorted(cfg.labels, key=lambda b: b != first):
        folder = out / "tune" / f"n{budget}"
        done = {arm: trials_of(folder, arm) for arm in cfg.inits}
        own = {a for a in cfg.inits if pretrains_own(dists, a)} if budget == first else set()
        for start in range(0, trials, at_once):
            numbers = range(start, min(start + at_once, trials))
            todo = [(n, a) for n in numbers for a in cfg.inits
                    if n not in {t["number"] for t in done[a]}]
            if todo:
                asked = ask_round(cfg, dists, folder, numbers, todo, done, budget == first,
                                  startup)
                for n, arm in todo:  # a trial may run for long: say what it is now
                    say(f"tune {arm} at {budget} labels: trial {n + 1}/{trials} started "
                        f"({shown(asked[n][arm])})")
                runs = {(n, a): applied({**fixed[a], **asked[n][a]}) for n, a in todo}
                before = {a: [t for t in done[a] if t["number"] < start] for a in done}
                prune = pruners(cfg, folder, before, prune_after) if prune_after else None
                blown = run_round(cfg, out, folder, budget, seeds, runs, device, own, say, prune)
                for n, arm in todo:
                    done[arm].append(record_trial(cfg, folder, budget, seeds, n, arm,
                                                  asked[n][arm], (n, arm) in blown))
                    best = best_trial(done[arm], trials)
                    rec = done[arm][-1]
                    outcome = ("diverged (scored 100%)" if rec["diverged"]
                               else f"validation error {100 * rec['val_error']:.2f}%"
                               + (", pruned" if rec.get("pruned") else ""))
                    say(f"tune {arm} at {budget} labels: trial {n + 1}/{trials} {outcome} "
                        f"({shown(asked[n][arm])}); best so far {100 * best['val_error']:.2f}%")
        for arm in cfg.inits:
            best = best_trial(done[arm], trials)
            if best["diverged"]:
                raise RunError(f"every trial of {arm} at {budget} labels diverged (each scored "
                               f"100%, in {folder / 'trials.jsonl'}): no setting the space gave "
                               f"it trains; narrow its ranges (a lower learning rate) and tune "
                               f"again in a new folder")
            choices.setdefault(arm, {})[budget] = {"settings": {**fixed[arm],
                                                                **drawn(best["settings"], arm)},
                                                  "trial": best["number"],
                                                  "val_error": best["val_error"]}
            if fixed[arm]:
                choices[arm][budget]["pretraining_trial"] = {"budget": first,
                                                             "trial": choices[arm][first]["trial"]}
        if budget == first:
            fixed.update(chosen_pretraining(cfg, out, space, trials))
            for arm in own:  # the arm's stacks in its chosen trial become the grid's
                trial = folder / f"trial-{choices[arm][first]['trial']:03d}"
                reuse_stacks(trial / "pretrain", out, arm)
    return {arm: {b: per[b] for b in cfg.labels} for arm, per in choices.items()}


def finished_trials(cfg: AblateConfig, out: Path, trials: int) -> int:
    """How many of the tuning's trials (every arm at every budget) have finished."""
    return sum(min(len(trials_of(out / "tune" / f"n{b}", a)), trials)
               for b in cfg.labels for a in cfg.inits)


def best_trial(done: list[dict], trials: int) -> dict:
    """The trial with the lowest validation error among the first `trials` (the earliest of equals)."""
    return min(done[:trials], key=lambda t: (t["val_error"], t["number"]))


def chosen_pretraining(cfg: AblateConfig, out: Path, space: dict, trials: int) -> dict:
    """Each pretrained arm's chosen pretraining settings ({arm: settings}), for the arms whose
    pretraining budget has finished its trials: the settings of that arm's stacks in the grid's
    folder."""
    if not PRETRAINING & set(space):
        return {}
    folder, fixed = out / "tune" / f"n{pretrain_budget(cfg)}", {}
    for arm in cfg.inits:
        done = trials_of(folder, arm)
        if arm in OBJECTIVES and len(done) >= trials:
            fixed[arm] = {k: v for k, v in drawn(best_trial(done, trials)["settings"],
                                                 arm).items() if k in PRETRAINING}
    return fixed


def ask_round(cfg: AblateConfig, dists: dict, folder: Path, numbers: range, todo: list,
              done: dict, pretraining: bool, startup: str = "sobol") -> dict:
    """The settings of a round's trials ({number: {arm: settings}}), each written (settings.json)
    before any runs: proposed from the trials of earlier rounds, those of this round counted as
    running, or read back when a resumed round proposed them already."""
    asked = {}
    for n in numbers:
        path = folder / f"trial-{n:03d}" / "settings.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        by = saved.pop(PROPOSED_BY, {})
        asked[n] = {a: drawn(s, a) for a, s in saved.items()}
        for arm in cfg.inits:
            if arm not in asked[n] and (n, arm) in todo:
                asked[n][arm] = propose(arm_space(dists, arm, pretraining),
                                        [t for t in done[arm] if t["number"] < numbers[0]], n,
                                        cfg.seeds[0], [asked[m][arm] for m in numbers if m < n],
                                        startup=startup, whole=arm_view(dists, arm))
                by[arm] = proposer(n, startup)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {**asked[n], **({PROPOSED_BY: by} if by else {})})
    return asked


def run_round(cfg: AblateConfig, out: Path, folder: Path, budget: str, seeds, runs: dict, device,
              own=frozenset(), say=None, prune=None) -> set:
    """Train a round's trials ({(number, arm): settings}) on the tuning seeds, test set unread:
    those whose settings differ at most in PER_ARM ones as one K-network loop (up to the batch
    cap), each network with its own PER_ARM settings; the arms in `own` from stacks of the
    trial's own (space.pretrains_own), the others from the grid's; `prune` (a job's pruner, or
    None) stops networks that trail (pruners). Returns the (number, arm)
    that diverged; a loop that diverged is rerun a trial at a time to find which. Of what the
    runs say, the stacks' lines (pretrained, copied) are passed on: a trial's own cells are
    summed up by its trial line."""
    from .ablate import run_jobs

    def stacks_say(line):
        if say and line.startswith("pretrain "):
            say(line)

    def jobs(keys, per):
        return [trial_job(out, folder / f"trial-{n:03d}", Cell(a, d, budget, s), a in own,
                          per[n, a])
                for s in seeds for d in cfg.depth_list for n, a in keys]
    blown = set()
    for keys, per in one_k_groups(runs):
        arms = sorted({a for _, a in keys}, key=cfg.inits.index)
        try:
            shared = {k: v for k, v in runs[keys[0]].items() if k not in PER_ARM}
            run_jobs(trial_config(cfg, arms, budget, seeds, shared), jobs(keys, per),
                     device, stacks_say, read_test=False, prune=prune)
        except Diverged:
            if len(keys) == 1:
                blown.update(keys)
                continue
            for n, a in keys:
                try:
                    run_jobs(trial_config(cfg, [a], budget, seeds, runs[n, a]),
                             jobs([(n, a)], per), device, stacks_say, read_test=False,
                             prune=prune)
                except Diverged:
                    blown.add((n, a))
    for n, a in blown:  # recorded as diverged and never rerun: their resume points go
        for s in seeds:
            for d in cfg.depth_list:
                trial = folder / f"trial-{n:03d}" / Cell(a, d, budget, s).id
                (trial / RESUME_NAME).unlink(missing_ok=True)
    return blown


def record_trial(cfg: AblateConfig, folder: Path, budget: str, seeds, n: int, arm: str,
                 settings: dict, diverged: bool) -> dict:
    """Trial n of an arm as its trials.jsonl line (appended): its settings, the mean of its cells'
    best validation errors and each one's; a diverged trial scores the worst error, 1. A trial
    with a network pruned says so ("pruned"): its score is the best it reached before."""
    errors, value, pruned = None, 1.0, False
    if not diverged:
        results = [json.loads((folder / f"trial-{n:03d}" / Cell(arm, d, budget, s).id /
                               "result.json").read_text())
                   for s in seeds for d in cfg.depth_list]
        errors = [r["best_val_error"] for r in results]
        value = sum(errors) / len(errors)
        pruned = any(r.get("pruned") for r in results)
    by = json.loads((folder / f"trial-{n:03d}" / "settings.json").read_text()).get(
        PROPOSED_BY, {}).get(arm)  # absent in trials proposed before it was recorded
    rec = {"arm": arm, "number": n, "settings": settings,
           "val_error": value if math.isfinite(value) else 1.0, "per_seed": errors,
           "diverged": diverged, **({"pruned": True} if pruned else {}),
           **({PROPOSED_BY: by} if by else {})}
    append_result(folder / "trials.jsonl", rec)
    return rec


def trial_job(out: Path, trial: Path, cell: Cell, own_stacks: bool, settings: dict):
    """One cell of a trial: its folder and results.jsonl in the trial's folder, its stacks the
    trial's own where the arm tunes pretraining, else the grid's."""
    from .ablate import Job
    return Job(cell, trial / cell.id, trial / "results.jsonl",
               trial / "pretrain" if own_stacks else out / "runs" / "pretrain",
               tuple(sorted(settings.items())))


def reuse_stacks(chosen: Path, out: Path, arm: str) -> None:
    """The arm's finished stacks in its chosen trial (the tuning seeds', pretrained with the
    settings every budget now uses) become the grid's, so they are not pretrained again. (The
    trial's stacks of other arms are not theirs to take: each arm chose its own trial.)"""
    if not chosen.is_dir():
        return
    for stack in sorted(chosen.glob(f"{arm}-*")):
        target = out / "runs" / "pretrain" / stack.name
        if (stack / "stack.pt").exists() and not target.exists():
            copy_run_folder(stack, target)


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
