"""The words of a tuning's report: the Tuning section of REPORT.md (tuning_text: the search space,
the budget and compute per arm, each arm's choice and every trial) and the whole REPORT.md of a
tuning whose final cells have not run (progress_markdown). Their numbers are report_tuning.py's."""
from __future__ import annotations

import json

from .proposals import PRUNE_STARTUP, STARTUP
from .report_numbers import counted, pct
from .space import PRETRAINING, draws, given_per_arm


def adopted_text(n: int) -> str:
    """The tuning section's sentence on final cells taken from the chosen trials' runs."""
    if n == 1:
        start, its = " One tuning seed's cell is its chosen trial's own run", "its"
    else:
        start, its = f" The tuning seeds' {n} cells are the chosen trials' own runs", "their"
    return (start + " (the same settings, seed, data order and model selection), not trained "
            f"again: {its} test error was read once, on the selected model, after the choice.")


def compute_by_arm(per_arm: dict) -> list[str]:
    """The trials' compute per arm (report_tuning.trial_compute) as a table, and how far the arms'
    fine-tuning passes differ where they differ by half or more: an equal number of trials is not
    an equal amount of training when the arms choose their own schedules and batch sizes."""
    arms = {a: c for a, c in per_arm.items() if c["finetunes"] or c["pretrain_runs"]}
    if not arms:
        return []
    stacks = any(c["pretrain_runs"] for c in arms.values())  # columns only if a trial pretrained
    L = ["", "| arm | trial fine-tunes | training examples passed over | seconds |"
         + " trial stacks pretrained | seconds |" * stacks, "|---|---|---|---|" + "---|---|" * stacks]
    for arm, c in arms.items():
        n = c["finetune_example_passes"]
        L.append(f"| {arm} | {c['finetunes']} | "
                 + (f"{n / 1e6:.1f} million" if n >= 1e6 else f"{n:,}")
                 + f" | {c['finetune_seconds']:.0f} |"
                 + f" {c['pretrain_runs']} | {c['pretrain_seconds']:.0f} |" * stacks)
    passes = {a: c["finetune_example_passes"] for a, c in arms.items() if c["finetunes"]}
    if len(passes) > 1 and min(passes.values()) > 0:
        most, least = max(passes, key=passes.get), min(passes, key=passes.get)
        if passes[most] >= 1.5 * passes[least]:
            L += ["", f"The arms had the same number of trials, not the same training: {most}'s "
                      f"trial fine-tunes passed over {passes[most] / passes[least]:.1f} times the "
                      f"training examples of {least}'s (their schedules and batch sizes were "
                      f"tuned too; the example passes count a pruned trial to where it stopped)."]
    return L


def sampler_text(t: dict) -> str:
    """How the tuning drew its trials (proposals.propose), naming the Optuna versions that
    proposed them where the trials record it (proposals.proposer)."""
    versions = sorted({r["proposed_by"].split("optuna ")[-1].rstrip(")")
                       for recs in t.get("history", {}).values() for r in recs
                       if r.get("proposed_by", "sobol") != "sobol"})
    optuna = f"Optuna {' and '.join(versions)}'s" if versions else "Optuna's"
    if t.get("startup") != "sobol":  # tunings from before the Sobol start
        return f"{optuna} TPE sampler, whose first {STARTUP} trials are random draws"
    own = any(given_per_arm(v) and len({json.dumps(s) for s in v.values()}) > 1
              for v in t["space"].values())  # arms whose ranges differ
    same = "the same points for every arm" + (", each in its own ranges" if own else "")
    if t["trials"] <= STARTUP:
        return f"a scrambled Sobol sequence over the space, {same}"
    return f"a scrambled Sobol sequence for the first {STARTUP}, {same}, then {optuna} TPE sampler"


def spec_text(v) -> str:
    """A setting's range or list in the search space, or each arm's where they have their own."""
    if given_per_arm(v):
        return " and ".join(f"{spec_text(s)} for {arm}" for arm, s in v.items())
    if isinstance(v, dict):
        return (f"{v['low']:g} to {v['high']:g}" + (" (log)" if v.get("log") else "")
                + (f" step {v['step']:g}" if v.get("step") else ""))
    return "one of " + ", ".join(map(str, v))


def trials_text(t: dict) -> list[str]:
    """Every trial of the tuning, by label budget (figures/tuning.png draws them)."""
    if not t.get("history"):
        return []
    L = ["", "All trials (mean validation error of the tuning seeds, each seed's in parentheses):", "",
         "| labels | trial | arm | settings | validation error % |", "|---|---|---|---|---|"]
    for budget, recs in t["history"].items():
        for r in recs:
            if r["diverged"]:
                error = "diverged (scored 100)"
            else:
                error = (f"{pct(r['val_error'])} ("
                         + ", ".join(pct(e) for e in r.get("per_seed") or []) + ")"
                         + (", pruned" if r.get("pruned") else ""))
            L.append(f"| {budget} | {r['number'] + 1} | {r['arm']} | {settings_text(r['settings'])}"
                     f" | {error} |")
    return L


def settings_text(settings: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in settings.items())


def tuning_text(t: dict) -> list[str]:
    """The tuning section: the search space, the budget per arm, and each arm's choice."""
    L = ["", "## Tuning (stackae tune)", "",
         f"Every arm had the same budget: {counted(t['trials'], 'trial')} at each label budget, "
         f"each trial fine-tuning seed{'s' if len(t['tune_seeds']) > 1 else ''} "
         f"{', '.join(map(str, t['tune_seeds']))} and judged on "
         f"{'their mean' if len(t['tune_seeds']) > 1 else 'its'} validation error "
         f"({sampler_text(t)}"
         + (f", {t['trials_at_once']} trials of each arm proposed at a time"
            if t.get("trials_at_once", 1) > 1 else "")
         + "); the test set was read only by the runs above, "
         "with the chosen settings. The settings in Setup are the starting point; the table gives "
         "what each arm ran with."
         + (adopted_text(len(t["adopted_cells"])) if t.get("adopted_cells") else ""), "",
         "Search space: " + "; ".join(f"`{k}` {spec_text(v)}" for k, v in t["space"].items())
         + ".", ""]
    if t.get("prune_after"):
        pruned = {arm: sum(1 for recs in t.get("history", {}).values() for r in recs
                           if r["arm"] == arm and r.get("pruned"))
                  for arm in t.get("choices", {})}
        L += [f"Trials were pruned from epoch {t['prune_after']} on (Optuna's MedianPruner): a "
              f"trial's network whose best validation error was worse than the median of its "
              f"arm's finished trials at the same epoch and seed stopped there, once "
              f"{PRUNE_STARTUP} had finished, and the trial scored the best it had reached. "
              + ("Trials pruned: " + ", ".join(f"{arm} {n}" for arm, n in pruned.items()) + "."
                 if any(pruned.values()) else "None was pruned."), ""]
    if t.get("pretrain_budget"):
        arms = list(t.get("choices", {}))
        who = "; ".join(f"`{k}` by {' and '.join(a for a in arms if draws(a, k))}"
                        for k in t["space"] if k in PRETRAINING)
        L += [f"Pretraining settings were tuned at the {t['pretrain_budget']}-label budget, each "
              f"trial of an arm that drew them pretraining stacks of its own; a pretrained arm's "
              f"choice there is its pretraining at every budget (one stack per seed, shared by "
              f"the budgets), and the other budgets tuned its fine-tuning settings alone. Each "
              f"was drawn by the pretrained arms whose layers read it ({who}); an arm that drew "
              f"none trained every trial from the grid's stacks, and random-init arms drew the "
              f"fine-tuning settings only.", ""]
    L += ["| arm | labels | chosen settings | validation error % | trial |", "|---|---|---|---|---|"]
    for arm, per_budget in t.get("choices", {}).items():
        for budget, c in per_budget.items():
            chosen = settings_text(c["settings"])
            pre = c.get("pretraining_trial")
            L.append(f"| {arm} | {budget} | {chosen} | {pct(c['val_error'])} | "
                     f"{c['trial'] + 1} of {t['trials']}"
                     + (f" (pretraining: trial {pre['trial'] + 1} at {pre['budget']} labels)"
                        if pre else "") + " |")
    if t.get("compute"):
        c = t["compute"]
        L += ["", f"Tuning compute: {counted(c['finetunes'], 'trial fine-tune')}, "
              f"{c['finetune_seconds']:.0f} s"
              + (f"; {counted(c['pretrain_runs'], 'trial pretraining run')}, "
                 f"{c['pretrain_seconds']:.0f} s"
                 if c["pretrain_runs"] else "")
              + ((" (the adopted cell's fine-tune is among them, counted under Compute too)"
                  if len(t["adopted_cells"]) == 1 else
                  f" (the {len(t['adopted_cells'])} adopted cells' fine-tunes are among them, "
                  "counted under Compute too)") if t.get("adopted_cells") else "")
              + ". Seconds are each network's share of its batch's wall time."]
        L += compute_by_arm(c.get("per_arm", {}))
    L += trials_text(t)
    return L


def progress_markdown(rep: dict) -> str:
    t, folder = rep["tuning"], rep["folder"]
    done = sum(n for per in rep["finished_trials"].values() for n in per.values())
    planned = t["trials"] * len(rep["inits"]) * len(rep["budgets"])
    chosen = done == planned  # every trial finished: the best are the choices
    L = [f"# Tuning in progress: {', '.join(rep['inits'])}", "",
         f"{done} of {planned} trials finished ({counted(t['trials'], 'trial')} per arm and label "
         f"budget, each judged on the mean validation error of tuning seed"
         f"{'s' if len(t['tune_seeds']) > 1 else ''} {', '.join(map(str, t['tune_seeds']))}). "
         + ("No test error has been read: every trial has finished and each arm's choice is "
            "below; the final cells, which read it once each with the chosen settings, have not "
            "run yet. This report is replaced by the full one when they have." if chosen else
            "No test error has been read: the final cells read it once, with each arm's chosen "
            "settings, after every trial has finished. This report is replaced by the full one "
            "then."), ""]
    if rep["warnings"]:
        L += ["**Warnings**", ""] + [f"- {w}" for w in rep["warnings"]] + [""]
    L += ["## " + ("Choices" if chosen else "Best so far"), "",
          "| arm | labels | trials finished | settings | validation error % | trial |",
          "|---|---|---|---|---|---|"]
    for arm, per in t["best_so_far"].items():
        for budget, r in per.items():
            error = "diverged (scored 100)" if r["diverged"] else pct(r["val_error"])
            L.append(f"| {arm} | {budget} | {rep['finished_trials'][budget][arm]} of "
                     f"{t['trials']} | {settings_text(r['settings'])} | {error} | "
                     f"{r['trial'] + 1} |")
    L += ["", "Search space: " + "; ".join(f"`{k}` {spec_text(v)}" for k, v in t["space"].items())
          + "."]
    L += trials_text(t)
    L += ["", "## Figures", "", "![tuning](figures/tuning.png)", "",
          "The trials in order: each one's mean validation error on the tuning seeds (x: "
          "diverged, scored 100%; hollow: pruned, scored the best it reached) and each arm's best "
          "so far.", "", "## Continue", "", "```"]
    L += [f"stackae tune --out {folder} --resume", f"stackae report {folder}", "```", ""]
    return "\n".join(L)
