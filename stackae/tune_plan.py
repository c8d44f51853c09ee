"""What `stackae tune` would do, as the --dry-run text: the arms, budgets, trials and tuning
seeds, the space and who draws each setting, how many fine-tunes and pretraining runs the trials
and the final ablation make, their work (a range where the space changes the number of epochs),
and how far a resumed tuning has come. Nothing is run or written.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import OBJECTIVES
from .config_grid import AblateConfig
from .proposals import PRUNE_STARTUP
from .grid import arm_names, copied_stacks, estimate, expand, finished
from .space import PRETRAINING, applied, draws, given_per_arm, pretrains_own, shown
from .tune import best_trial, finished_trials, trial_config, trials_of
from .tune_setup import command

# the settings that change how much work a run is (grid.estimate reads them)
SIZED = ("pretrain_epochs", "finetune_epochs", "min_epoch_examples")


def ends(spec, layers: int = 1) -> tuple:
    """A setting's lowest and highest value in the space (a per-layer value counts by its sum
    over the `layers` layers, one value standing for each; a setting given per arm, over every
    arm's)."""
    def size(v):
        if isinstance(v, (list, tuple)):
            return v[0] * layers if len(v) == 1 else sum(v)
        return v * layers
    if given_per_arm(spec):
        every = [v for s in spec.values() for v in ends(s, layers)]
        return min(every, key=size), max(every, key=size)
    if isinstance(spec, dict):
        return spec["low"], spec["high"]
    return min(spec, key=size), max(spec, key=size)


def described(spec) -> str:
    if given_per_arm(spec):
        return "; ".join(f"{arm} {described(s)}" for arm, s in spec.items())
    if isinstance(spec, dict):
        scale = ", log scale" if spec.get("log") else ""
        step = f", step {spec['step']}" if "step" in spec else ""
        return f"{spec['low']} to {spec['high']}{scale}{step}"
    return "one of " + ", ".join(map(str, spec))


def work(cfg: AblateConfig, space: dict, trials: int, seeds: tuple, sizes: dict,
         first, copied=frozenset()) -> list[dict]:
    """The work of the trials and of the final ablation, at the space's lowest and highest
    epochs: [{"trials": estimate, "final": estimate}, ...] (one entry when the space does not
    change the number of epochs). The final stacks named in `copied` are no work."""
    sized = [n for n in SIZED if n in space]
    out = []
    for end in ([0, 1] if sized else [0]):
        at = dataclasses.replace(cfg, **applied({n: ends(space[n], len(cfg.layers))[end]
                                                 for n in sized}))
        pre = ft = pre_flops = ft_flops = 0
        for budget in at.labels:
            cells = expand(trial_config(at, list(at.inits), budget, seeds, {}))
            one = estimate(at, cells, {**sizes, "test": 0})  # a trial never reads the test set
            ft += trials * one["finetune_example_passes"]
            ft_flops += trials * one["finetune_tflop"]
            if budget == first:  # each trial of an arm that tunes pretraining pretrains stacks
                own = estimate(at, [c for c in cells if pretrains_own(space, c.init)], sizes)
                pre += one["pretrain_example_passes"] + (trials - 1) * own[
                    "pretrain_example_passes"]  # of its own; the other arms', the grid's, once
                pre_flops += one["pretrain_tflop"] + (trials - 1) * own["pretrain_tflop"]
        final = estimate(at, expand(at), sizes, copied)
        trained = [c for c in expand(at)  # but where the arm's trials pretrained their own stacks
                   if c.seed not in seeds or c.budget == first and pretrains_own(space, c.init)]
        kept = estimate(at, trained, sizes)  # a tuning seed's cell is its chosen trial's run
        final = {**final, "finetune_example_passes": kept["finetune_example_passes"],
                 "finetune_tflop": kept["finetune_tflop"]}
        if first is not None:  # the tuning seeds' stacks come from the chosen trials
            share = len(set(at.seeds) - set(seeds)) / len(at.seeds)
            final = {**final, "pretrain_example_passes": round(final["pretrain_example_passes"]
                                                                * share),
                     "pretrain_tflop": final["pretrain_tflop"] * share}
        out.append({"trials": {"pretrain_example_passes": pre, "pretrain_tflop": pre_flops,
                               "finetune_example_passes": ft, "finetune_tflop": ft_flops},
                    "final": final})
    return out


def describe(cfg: AblateConfig, out: Path, chosen: dict, sizes: dict) -> list[str]:
    """The --dry-run text of a tuning (`chosen`: tune_setup.setup's space, trials, seeds, at once, pruning)."""
    space, trials, at_once = chosen["space"], chosen["trials"], chosen["trials_at_once"]
    seeds = tuple(chosen["tune_seeds"])
    first = chosen.get("pretrain_budget")
    pretrained = [i for i in cfg.inits if i in OBJECTIVES]
    own = [i for i in pretrained if first and pretrains_own(space, i)]
    order = sorted(cfg.labels, key=lambda b: b != first)
    lines = [f"tuning plan for {out}",
             f"  arms:    {', '.join(arm_names(cfg))}",
             f"  budgets: {', '.join(order)} labelled images, each arm tuned at each"
             + (f" ({first} first: it tunes the pretraining)" if first else ""),
             f"  trials:  {trials} per arm and budget, {at_once} of each arm at once; each "
             f"fine-tunes seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} and "
             f"is judged on {'their mean' if len(seeds) > 1 else 'its'} validation error (the "
             f"test set is not read)"]
    if chosen.get("prune_after"):
        lines.append(f"  pruning: from epoch {chosen['prune_after']}, a trial's network that "
                     f"trails the median of its arm's finished trials stops (after "
                     f"{PRUNE_STARTUP} have finished)")
    lines.append("  space:")
    for name, spec in space.items():
        drawn = [i for i in cfg.inits if draws(i, name)]
        who = (f"pretrained arm{'s' if len(drawn) > 1 else ''} ({', '.join(drawn)}), at "
               f"{first} labels" if name in PRETRAINING else "every arm, at every budget")
        lines.append(f"    {name}: {described(spec)}  [{who}]")
    depths = len(cfg.depth_list)
    n_ft = len(cfg.inits) * len(cfg.labels) * trials * len(seeds) * depths
    cells = expand(cfg)
    keys = sorted({c.pretrain for c in cells if c.pretrain})
    copied, copies = copied_stacks(cfg, out, cells) if not first else (set(), set())
    elsewhere = copied | copies
    if first:
        rest = [i for i in pretrained if i not in own]
        stacks = (f"{len(own) * trials * len(seeds) * depths} stacks, each trial of "
                  f"{' and '.join(own)} at {first} labels its own"
                  + (f"; {len(rest) * len(seeds) * depths} of the grid's for "
                     f"{' and '.join(rest)} (which draw{'s' if len(rest) == 1 else ''} no "
                     f"pretraining setting), pretrained once and shared by every trial"
                     if rest else ""))
    elif pretrained:
        shared = {c.pretrain for c in cells if c.pretrain and c.seed in seeds}
        stacks = (f"the grid's stacks of seed{'s' if len(seeds) > 1 else ''} "
                  f"{', '.join(map(str, seeds))}"
                  + (f" ({len(shared & elsewhere)} of {len(shared)} copied"
                     + (", the rest pretrained once" if shared - elsewhere else "")
                     + "), shared by every trial"
                     if shared & elsewhere else ", pretrained once and shared by every trial"))
    else:
        stacks = "none"
    lines += [f"  trial runs: {n_ft} fine-tunes; pretraining: {stacks}"]
    lines.append(f"  final:   {len(cells)} cells over seeds {', '.join(map(str, cfg.seeds))}, "
                 f"each arm with its choice per budget, the test set read once per cell (a "
                 f"tuning seed's cell is the chosen trial's run, not trained again"
                 + (f", but for {' and '.join(own)} at {first} labels, whose trials started "
                    f"from stacks of their own" if first else "") + "); "
                 f"pretraining: {len(keys)} stacks"
                 + (" (the tuning seeds' from the trials)" if first and keys else "")
                 + (f", {len(copies)} to copy from {cfg.stacks_from}"
                    if cfg.stacks_from and not first else "")
                 + (", the copied ones no work below" if elsewhere else ""))
    ranges = work(cfg, space, trials, seeds, sizes, first, elsewhere)

    def span(stage: str, what: str, unit: str, fmt) -> str:
        vals = [r[stage][f"{what}_{unit}"] for r in ranges]
        return fmt(vals[0]) if len(set(vals)) == 1 else f"{fmt(vals[0])} to {fmt(vals[-1])}"
    for stage in ("trials", "final"):
        pre = (f"{span(stage, 'pretrain', 'example_passes', '{:,}'.format)} example-passes "
               f"(~{span(stage, 'pretrain', 'tflop', '{:.2g}'.format)} TFLOP)"
               if any(r[stage]["pretrain_example_passes"] for r in ranges) else "none")
        lines.append(
            f"  work ({stage}, whole): pretraining {pre}; fine-tuning "
            f"{span(stage, 'finetune', 'example_passes', '{:,}'.format)} example-passes plus "
            f"evaluation (~{span(stage, 'finetune', 'tflop', '{:.2g}'.format)} TFLOP)")
    if len(ranges) > 1:
        lines.append(f"           (the range: the space's fewest to most epochs, "
                     f"{', '.join(n for n in SIZED if n in space)})")
    n_trials = len(cfg.inits) * len(cfg.labels) * trials
    stacks_done = sum((out / "runs" / "pretrain" / k / "stack.pt").exists() for k in keys)
    from .checkpoint import resume_epoch
    from .runlog import RESUME_NAME
    part = [e for p in (*out.glob(f"tune/n*/trial-*/*/{RESUME_NAME}"),
                        *out.glob(f"runs/finetune/*/{RESUME_NAME}"))
            if not (p.parent / "result.json").exists() and (e := resume_epoch(p.parent))]
    lines += [f"  progress: {finished_trials(cfg, out, trials)} of {n_trials} trials, "
              f"{sum(finished(out, c) for c in cells)} of {len(cells)} cells and {stacks_done} "
              f"of {len(keys)} final stacks finished (the work above counts all of them)"
              + (f"; {len(part)} fine-tuning runs part-way, resuming after epoch "
                 f"{min(part)}{'' if min(part) == max(part) else ' to ' + str(max(part))}"
                 if part else ""),
              *best_so_far(cfg, out, trials),
              f"  command: {command(cfg, out, chosen)}"]
    return lines


def best_so_far(cfg: AblateConfig, out: Path, trials: int) -> list[str]:
    """Each arm's best finished trial at each budget (mean validation error over the tuning
    seeds; a diverged trial scores 100%), for watching a tuning that is still running."""
    lines = []
    for budget in cfg.labels:
        found = {arm: trials_of(out / "tune" / f"n{budget}", arm) for arm in cfg.inits}
        best = {arm: best_trial(t, trials) for arm, t in found.items() if t}
        if best:
            lines.append(f"  best so far at {budget} labels: " + "; ".join(
                f"{arm} {100 * r['val_error']:.2f}% (trial {r['number'] + 1} of "
                f"{min(len(found[arm]), trials)} finished: {shown(r['settings'])})"
                for arm, r in best.items()))
    return lines
