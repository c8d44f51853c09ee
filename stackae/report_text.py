"""REPORT.md from a report (the dict that report.json holds): verdicts first, then tables, figures,
setup and the command that reproduces it."""
from __future__ import annotations

import json

from .config import OBJECTIVES
from .config_grid import RANDOM_INITS
from .proposals import PRUNE_STARTUP, STARTUP
from .space import PRETRAINING, draws, given_per_arm

SCHEMES = {"default": "torch's default, U(+-1/sqrt(fan_in)) for weights and biases",
           "xavier": "Xavier/Glorot uniform, zero biases",
           "kaiming": "Kaiming/He normal, zero biases",
           "uniform": "U(+-1/sqrt(fan_in)) weights, zero biases (Erhan et al. 2010)"}


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def pval(p) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p < 0.01 else f"{p:.3f}")


def arm_text(init: str, cfg: dict) -> str:
    if init in RANDOM_INITS:
        return f"`{init}`: random init, {SCHEMES[RANDOM_INITS[init]]}"
    extra = {"denoising": f", {cfg.get('corruption')} noise "
                          f"{','.join(map(str, cfg.get('noise', [])))}",
             "sparse": f", {cfg.get('sparsity_penalty')} penalty, rho {cfg.get('sparsity_target')}"
                       f", beta {cfg.get('sparsity_weight')}",
             "contractive": f", lambda {cfg.get('contraction')}",
             "rbm": f", CD-{cfg.get('cd_k')}"}.get(init, "")
    return (f"`{init}`: greedy layer-wise pretraining, {init} "
            f"{'RBMs' if init == 'rbm' else 'autoencoders'}{extra}")


def markdown(rep: dict) -> str:
    s, cfg = rep["setup"], rep["setup"]["config"]
    sizes = s["data"]
    ref = rep["reference"]
    L = [f"# Ablation report: {', '.join(rep['inits'])}", ""]
    L += [f"Test error of the same network fine-tuned from each initialization, over "
          f"{counted(len({x for c in rep['conditions'] for x in c['seeds']}), 'seed')} and label "
          f"budgets {', '.join(rep['budgets'])}. Every arm of a seed shares the validation split, "
          f"the labelled subset, the classifier head and the fine-tuning batch order, so "
          f"differences are paired by seed. {counted(rep['cells']['finished'], 'cell')} finished"
          + (f" of {rep['cells']['planned']} planned." if rep["cells"]["planned"] else "."), ""]
    L += ["## Verdicts", ""]
    if rep["comparisons"]:
        for c in rep["comparisons"]:
            depth = f", depth {c['depth']}" if len(rep["depths"]) > 1 else ""
            L.append(f"- **{c['arm']} vs {ref}, {c['budget']} labels{depth}:** {c['verdict']}.")
        L.append("")
        L.append(f"Significance uses the paired t-test at 0.05 after Holm's correction across the "
                 f"{len(rep['budgets'])} label budgets (per arm); the Wilcoxon signed-rank test is "
                 f"shown as a check that does not assume normal differences.")
        L.append("")
    if rep["warnings"]:
        L += ["**Warnings**", ""] + [f"- {w}" for w in rep["warnings"]] + [""]
    L += ["## Test error by condition", "",
          "| depth | labels | init | seeds | mean ± std (%) | 95% CI (%) |",
          "|---|---|---|---|---|---|"]
    for c in rep["conditions"]:
        std = f" ± {pct(c['std'])}" if c["std"] is not None else ""
        ci = f"{pct(c['ci_low'])} – {pct(c['ci_high'])}" if c["ci_low"] is not None else "n/a"
        L.append(f"| {c['depth']} | {c['budget']} | {c['init']} | {c['n']} | "
                 f"{pct(c['mean'])}{std} | {ci} |")
    L.append("")
    if rep["comparisons"]:
        L += [f"## Paired differences (arm − {ref}, percentage points)", "",
              "Negative means the arm has the lower test error.", "",
              "| depth | labels | arm | pairs | mean diff | 95% CI | t-test p | Holm p | "
              "Wilcoxon p | Holm p |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in rep["comparisons"]:
            diff = "n/a" if c["mean_diff"] is None else f"{100 * c['mean_diff']:+.2f}"
            ci = (f"{100 * c['ci_low']:+.2f} to {100 * c['ci_high']:+.2f}"
                  if c["ci_low"] is not None else "n/a")
            L.append(f"| {c['depth']} | {c['budget']} | {c['arm']} | {c['n']} | {diff} | {ci} | "
                     f"{pval(c['p_t'])} | {pval(c['p_t_holm'])} | {pval(c['p_wilcoxon'])} | "
                     f"{pval(c['p_wilcoxon_holm'])} |")
        L.append("")
    captions = {"error_vs_budget": "Test error against label budget (log axis); lines are means "
                                   "over seeds, bands 95% t-intervals.",
                "learning_curves": "Validation error during fine-tuning; mean over seeds, band "
                                   "± 1 standard deviation.",
                "per_seed": "Every seed's test error; boxes per init, grey lines join the arms of "
                            "one seed.",
                "filters": "First-layer filters (up to 100 hidden units, each scaled to its own "
                           "range): a pretrained stack beside the same layer at random init.",
                "tuning": "The tuning's trials in order: each one's mean validation error on the "
                          "tuning seeds (x: diverged, scored 100%; hollow: pruned, scored the "
                          "best it reached) and each arm's best so far."}
    L += ["## Figures", ""]
    for f in rep["figures"]:
        name = f.split("/")[-1][:-4]
        L += [f"![{name}]({f})", "", captions.get(name, ""), ""]
    L += ["## Setup", ""]
    if cfg:
        n_train = f"{sizes['train']:,}" if sizes.get("train") is not None else "?"
        widths = "-".join(map(str, [sizes.get("input_dim", "?"), *cfg["layers"],
                                    sizes.get("classes", "classes")]))
        pe = cfg["pretrain_epochs"]
        L += [f"- **Data:** {cfg.get('data') or cfg['dataset']}; {n_train} training images "
              f"(after a seeded {sizes.get('val', cfg['val_size']):,}-image validation split"
              + (f", a seeded subset of {cfg['train_size']:,}" if cfg.get("train_size") else "")
              + f"); {sizes.get('test', '?'):,} test images."
              + (" Pretraining uses every training image, without labels; fine-tuning only the "
                 "labelled budget." if any(i in OBJECTIVES for i in rep["inits"]) else ""),
              f"- **Network:** {widths}, {cfg['activation']} hidden units"
              + (f"; depths {', '.join(map(str, rep['depths']))}" if len(rep["depths"]) > 1 else "")
              + ".",
              "- **Arms:** " + "; ".join(arm_text(i, cfg) for i in rep["inits"]) + ".",
              f"- **Pretraining:** {cfg['pretrain_optimizer']} lr "
              f"{','.join(map(str, cfg['pretrain_lr']))}, {','.join(map(str, pe))} epoch(s) per "
              f"layer, batch {cfg['pretrain_batch_size']}, tied weights: {cfg['tied']}"
              + (f", momentum {cfg['pretrain_momentum']}" if cfg["pretrain_optimizer"] == "sgd"
                 else "")
              + (f", weight decay {cfg['pretrain_weight_decay']}"
                 if cfg.get("pretrain_weight_decay") else "") + "."
              + "".join(f" {n} of the {s['pretrain_runs']} stacks {'was' if n == 1 else 'were'} copied from {where} "
                        f"(pretrained there with these settings, checked)."
                        for where, n in s.get("copied_stacks", {}).items()),
              f"- **Fine-tuning:** {cfg['finetune_optimizer']} lr {cfg['finetune_lr']}"
              + (f" (momentum {cfg['finetune_momentum']})" if cfg["finetune_optimizer"] == "sgd"
                 else "")
              + (", cosine decay to 0" if cfg.get("finetune_lr_schedule") == "cosine" else "")
              + f", {cfg['finetune_epochs']} epochs of at least "
              f"{cfg['min_epoch_examples']:,} examples, batch {cfg['finetune_batch_size']}, dropout "
              f"{cfg['dropout']}" + (f" (inputs {cfg['input_dropout']})" if cfg.get("input_dropout")
                                      else "")
              + (f", max-norm {cfg['max_norm']}" if cfg.get("max_norm") else "")
              + f", weight decay {cfg['finetune_weight_decay']}; the test error is read at the "
              f"epoch of best validation error.",
              f"- **Label budgets:** {', '.join(cfg['labels'])}; **seeds:** "
              f"{', '.join(map(str, cfg['seeds']))}."]
    for v, count in s["versions"]:
        p = json.loads(v)
        cells = f" ({count} cell{'s' if count > 1 else ''})" if len(s["versions"]) > 1 else ""
        L.append(f"- **Ran on:** {p['device']}; stackae {p['stackae']}, torch {p['torch']}, "
                 f"python {p['python']}, git commit {p['git_commit'] or 'unknown'}"
                 f"{' with uncommitted changes' if p.get('git_dirty') else ''}{cells}.")
    n_copied = sum(s.get("copied_stacks", {}).values())
    pretrained = s["pretrain_runs"] - n_copied
    L.append(f"- **Compute:** {counted(pretrained, 'pretraining run')}, "
             f"{s['pretrain_seconds']:.0f} s"
             + ((" (the copied stack's time is in its own folder)" if n_copied == 1 else
                 f" (the {n_copied} copied stacks' time is in their own folder)") if n_copied else "")
             + f"; {counted(rep['cells']['finished'], 'fine-tune')}, "
               f"{s['finetune_seconds']:.0f} s.")
    if rep.get("tuning"):
        L += tuning_text(rep["tuning"])
    L += ["", "## Reproduce", "", "```"]
    if rep.get("tuning", {}).get("command"):
        L.append(rep["tuning"]["command"])
    elif s["command"]:
        L.append(s["command"])
    L += [f"stackae report {rep['folder']}", "```", "",
          "The command names only what differs from this stackae version's defaults; "
          f"`stackae ablate --config {rep['folder']}/config.json --out NEW` repeats every setting "
          "with any version.", "",
          "Files: `results.csv` (one row per cell), `report.json` (this report as data), "
          "`runs/finetune/<cell>/` (each cell's result.json, config.json, metrics and TensorBoard "
          "events), `runs/pretrain/<objective>-d<depth>-s<seed>/` (the stacks). "
          f"`tensorboard --logdir {rep['folder']}/runs/finetune` shows the arms side by side "
          "(HParams keyed by arm, seed and budget).", ""]
    if rep["cells"]["missing"]:
        L += [f"Missing cells: {', '.join(rep['cells']['missing'])}.", ""]
    return "\n".join(L)


def adopted_text(n: int) -> str:
    """The tuning section's sentence on final cells taken from the chosen trials' runs."""
    if n == 1:
        start, its = " One tuning seed's cell is its chosen trial's own run", "its"
    else:
        start, its = f" The tuning seeds' {n} cells are the chosen trials' own runs", "their"
    return (start + " (the same settings, seed, data order and model selection), not trained "
            f"again: {its} test error was read once, on the selected model, after the choice.")


def counted(n: int, noun: str) -> str:
    """'1 seed', '2 seeds'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
