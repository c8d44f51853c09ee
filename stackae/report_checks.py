"""What a report warns of in the runs themselves: an arm still learning when fine-tuning stopped
(undertrained) and a seed that ended apart from its arm (outlying_seeds), each a reason a
condition's mean, and any comparison with it, may say less about the initialization than it seems.
report.py adds these to REPORT.md's warnings.
"""
from __future__ import annotations

import statistics

from .report_text import pct


def by_condition(records: list[dict]) -> dict:
    """The records of each condition, keyed (depth, budget, init)."""
    groups = {}
    for r in records:
        groups.setdefault((r["depth"], r["budget"], r["init"]), []).append(r)
    return groups


# an arm whose training error at the selected epoch is at least this has not fit its labelled set
UNDERFIT_TRAIN_ERROR = 0.10


def undertrained(records: list[dict], curves: dict, inits, depths, budgets,
                 schedule: str = "constant") -> list[str]:
    """Warnings for conditions that were still learning when fine-tuning stopped. Either the mean
    training error at the selected epoch is still UNDERFIT_TRAIN_ERROR or more (a random-init
    sigmoid network still on its early plateau is the usual case), or, under a constant learning
    rate, most seeds chose their last epoch. Their test error, and any difference from them, then
    depends on the fine-tuning budget as much as on the initialization. Under a cosine schedule
    the last epochs run at a learning rate near 0, so choosing one of them is convergence."""
    groups = by_condition(records)
    out = []
    for key in [(d, b, i) for d in depths for b in budgets for i in inits if (d, b, i) in groups]:
        rs = groups[key]
        at_end = sum(r["best_epoch"] == r["epochs_run"] for r in rs)
        last = sum(r["best_epoch"] == r["epochs_run"] > 1 for r in rs)  # of more than one epoch
        train = []
        for r in rs:
            curve = curves.get(r["id"], {}).get("train_error") or []
            if 0 < r["best_epoch"] <= len(curve):
                train.append(curve[r["best_epoch"] - 1])
        name = f"{key[2]}, {key[1]} labels" + (f", depth {key[0]}" if len(depths) > 1 else "")
        if train and sum(train) / len(train) >= UNDERFIT_TRAIN_ERROR:
            lo, hi = f"{100 * min(train):.0f}", f"{100 * max(train):.0f}"
            out.append(f"{name}: training error at the selected epoch "
                       f"is {lo if lo == hi else lo + '–' + hi}% ({at_end} of {len(rs)} "
                       f"seeds chose their last epoch): the arm had not fit its labelled set when "
                       f"fine-tuning stopped (too few epochs, a plateau, or too little capacity), "
                       f"so its error, and any difference from it, may reflect that more than the "
                       f"initialization")
        elif schedule != "cosine" and 2 * last > len(rs):
            out.append(f"{name}: {last} of {len(rs)} seeds chose their last epoch, so validation "
                       f"error was still falling when fine-tuning stopped: more epochs may lower "
                       f"this arm's error and change any difference from it")
    return out


# a seed whose best validation error is this many times its arm's other seeds' median, and this
# much above it, ended apart from them: it diverged, stalled or blew up rather than varied
OUTLIER_RATIO, OUTLIER_GAP = 2.0, 0.02


def outlying_seeds(records: list[dict], curves: dict, inits, depths, budgets) -> list[str]:
    """Warnings for seeds that ended far from the rest of their arm (at least 3 seeds): a learning
    rate at the edge of an arm's stable range can leave one seed near chance while the others
    converge, and that one seed then carries the arm's mean and any comparison with it."""
    groups = by_condition(records)
    out = []
    for key in [(d, b, i) for d in depths for b in budgets for i in inits if (d, b, i) in groups]:
        rs = sorted(groups[key], key=lambda r: r["seed"])
        for r in rs if len(rs) >= 3 else ():
            others = statistics.median(o["best_val_error"] for o in rs if o is not r)
            err = r["best_val_error"]
            if err >= OUTLIER_RATIO * others and err - others >= OUTLIER_GAP:
                loss = (curves.get(r["id"], {}).get("train_loss") or [None])[-1]
                name = f"{key[2]}, {key[1]} labels" + (f", depth {key[0]}" if len(depths) > 1
                                                       else "")
                out.append(f"{name}: seed {r['seed']} ended apart from the arm's other seeds "
                           f"(best validation error {pct(err)}% against their median "
                           f"{pct(others)}%; test error {pct(r['test_error'])}%"
                           + (f"; last training loss {loss:.3g}" if loss is not None else "")
                           + "): it diverged, blew up or stalled rather than varied (a learning "
                           "rate near the edge of the arm's stable range, or a plateau its seeds "
                           "leave at different times), and the arm's mean and any comparison with "
                           "it carry that one seed")
    return out
