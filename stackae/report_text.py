"""REPORT.md from a report (the dict that report.json holds): verdicts first, then tables, figures,
setup and the command that reproduces it."""
from __future__ import annotations

import json

from .config import OBJECTIVES
from .config_grid import RANDOM_INITS
from .report_numbers import counted, pct, pval
from .report_tuning_text import tuning_text

SCHEMES = {"default": "torch's default, U(+-1/sqrt(fan_in)) for weights and biases",
           "xavier": "Xavier/Glorot uniform, zero biases",
           "kaiming": "Kaiming/He normal, zero biases",
           "uniform": "U(+-1/sqrt(fan_in)) weights, zero biases (Erhan et al. 2010)"}


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


def summary(rep: dict) -> list[str]:
    """The report in a few lines, for the terminal: each condition's test error, each budget's
    verdict and the warnings; for a tuning still running, each arm's best trial so far."""
    L = []
    if rep.get("in_progress"):  # a tuning whose final cells have not run (report_tuning)
        trials = rep["tuning"]["trials"]
        for arm, per in rep["tuning"]["best_so_far"].items():
            for budget, r in per.items():
                done = rep["finished_trials"][budget][arm]
                L.append(f"{arm:>12} {budget:>6} labels: "
                         + (f"chosen trial {r['trial'] + 1} of {trials}, validation error "
                            f"{pct(r['val_error'])}% (final cells not run yet)"
                            if done >= trials else
                            f"best validation error so far {pct(r['val_error'])}% (trial "
                            f"{r['trial'] + 1}; {done} of {trials} trials finished)"))
    for c in rep.get("conditions", []):
        depth = f" depth {c['depth']}" if len(rep["depths"]) > 1 else ""
        std = f" ± {pct(c['std'])}" if c["std"] is not None else ""
        L.append(f"{c['init']:>12}{depth} {c['budget']:>6} labels: test error "
                 f"{pct(c['mean'])}%{std} (n={c['n']})")
    for c in rep.get("comparisons", []):
        depth = f" depth {c['depth']}" if len(rep["depths"]) > 1 else ""
        L.append(f"{c['budget']} labels{depth}: {c['verdict']}")
    return L + [f"warning: {w}" for w in rep["warnings"]]
