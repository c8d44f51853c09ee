"""The README's headline table, printed from the committed reference reports.

    python scripts/reference/headline.py            # markdown, from runs/reference/*/report.json

One row per (experiment, arm, label budget): seeds, mean ± sd test error, and for a pretrained arm
its paired difference from the experiment's random-init arm with the 95% CI and Holm-corrected
p-values (paired t-test and Wilcoxon signed-rank). Experiments not yet run are listed as missing,
tunings whose final cells have not run as in progress (the deep-autoencoder experiments, which
are not comparisons of arms, have their own REPORT.md).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "runs" / "reference"
EXPERIMENTS = ("classic", "classic-small-batch", "classic-pretrain-30", "classic-tuned", "budgets",
               "budgets-large", "budgets-tuned", "budgets-10k-tuned", "budgets-all-tuned", "modern",
               "modern-long", "objectives", "dbn-small-batch", "dbn-tuned", "dbn-tuned-wide",
               "dbn-dropout-probe", "dbn-dropout-probe-xavier", "dbn-dropout")


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def rows(name: str, report: dict) -> list[str]:
    comps = {(c["arm"], c["budget"]): c for c in report["comparisons"]}
    order = {b: i for i, b in enumerate(report["budgets"])}
    out = []
    for c in sorted(report["conditions"], key=lambda c: (order[c["budget"]], c["mean"])):
        d = comps.get((c["init"], c["budget"]))
        diff = (f"{pct(d['mean_diff'])} ({pct(d['ci_low'])} to {pct(d['ci_high'])}) | "
                f"{d['p_t_holm']:.2g} | {d['p_wilcoxon_holm']:.2g}") if d else "— | — | —"
        out.append(f"| {name} | {c['init']} | {c['budget']} | {c['n']} | "
                   f"{pct(c['mean'])}{'' if c['std'] is None else ' ± ' + pct(c['std'])} | "
                   f"{diff} |")  # one seed: no sd
    return out


def main() -> int:
    lines = ["| experiment | arm | labels | seeds | test error % (mean ± sd) | "
             "difference from random init, points (95% CI) | p (t, Holm) | p (Wilcoxon, Holm) |",
             "|---|---|---|---|---|---|---|---|"]
    missing, running = [], []
    for name in EXPERIMENTS:
        path = ROOT / name / "report.json"
        report = json.loads(path.read_text()) if path.exists() else None
        if report is None:
            missing.append(name)
        elif report.get("in_progress"):  # a tuning whose final cells have not run: no test error
            running.append(name)
        else:
            lines += rows(name, report)
    print("\n".join(lines))
    if running:
        print(f"\ntuning in progress (its REPORT.md has the trials so far): {', '.join(running)}",
              file=sys.stderr)
    if missing:
        print(f"\nnot yet run: {', '.join(missing)} (scripts/reference/run.sh NAME)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
