"""What a report reads of the runs and warns of in them: the results.jsonl lines it can use
(read_records); an arm still learning when fine-tuning stopped (undertrained), a tuning's choice
still learning when its trial stopped (still_learning) and a seed that ended apart from its arm
(outlying_seeds), each a reason a condition's mean, and any comparison with it, may say less
about the initialization than it seems. report.py and report_tuning.py add these to REPORT.md's
warnings.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .report_numbers import pct
from .space import given_per_arm

# what a results.jsonl line must hold for the tables, and of which types
RECORD_TYPES = {"id": str, "folder": str, "init": str, "budget": str, "seed": int, "depth": int,
                "labels": int, "test_error": (int, float), "best_val_error": (int, float),
                "best_epoch": int, "epochs_run": int, "seconds": (int, float)}


def usable(rec) -> bool:
    """A results line the report can use; anything else is counted and skipped, never a crash."""
    return isinstance(rec, dict) and all(
        isinstance(rec.get(k), t) and not isinstance(rec.get(k), bool)
        for k, t in RECORD_TYPES.items())


def timed(rec) -> bool:
    """A tuning trial's results line (its test error unread): enough to count its compute."""
    return isinstance(rec, dict) and all(
        isinstance(rec.get(k), RECORD_TYPES[k]) and not isinstance(rec.get(k), bool)
        for k in ("id", "folder", "init", "labels", "epochs_run", "seconds"))


def read_records(path: Path, keep=usable) -> tuple[dict, int]:
    """A results.jsonl's records that `keep` accepts, by cell id (the last line of a cell wins),
    and the number of lines skipped as unreadable."""
    records, bad = {}, 0
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if keep(rec):
            records[rec["id"]] = rec
        elif line.strip():
            bad += 1
    return records, bad


def pretrained_seconds(stacks: Path) -> dict[str, float]:
    """Each stack's pretraining seconds in a folder of stacks, by its folder's name, those
    pretrained there only: a copied stack's seconds were spent where it was pretrained."""
    return {p.parent.name: json.loads(p.read_text()).get("seconds", 0.0)
            for p in sorted(stacks.glob("*/summary.json"))
            if not (p.parent / "copied.json").exists()}


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


def still_learning(folder: Path, space: dict, choices: dict, noun: str = "choice") -> list[str]:
    """A warning for each arm's choice (or best so far) whose networks were best in the last
    tenth of their epochs on most tuning seeds under a constant learning rate: still learning
    when they stopped, so a longer schedule may beat the choice. (Under a cosine schedule the last
    epochs run at a rate near 0, so a late best epoch is convergence; a pruned network stopped
    early.)"""
    out = []
    for arm, per in choices.items():
        for budget, choice in per.items():
            trial = folder / "tune" / f"n{budget}" / f"trial-{choice['trial']:03d}"
            runs = []
            for rec in read_records(trial / "results.jsonl", timed)[0].values():
                try:
                    r = json.loads((trial / rec["id"] / "result.json").read_text())
                except (OSError, ValueError):
                    continue
                if (rec.get("init") == arm and isinstance(r, dict) and not r.get("pruned")
                        and all(isinstance(r.get(k), int) for k in ("best_epoch", "epochs_run"))):
                    runs.append(r)
            late = [r for r in runs if (r.get("config") or {}).get("lr_schedule") == "constant"
                    and r["epochs_run"] > 1 and r["best_epoch"] > 0.9 * r["epochs_run"]]
            if not runs or 2 * len(late) <= len(runs):
                continue
            epochs = late[0]["epochs_run"]
            spec = space.get("finetune_epochs")
            spec = spec.get(arm) if given_per_arm(spec) else spec
            most = (max(spec) if isinstance(spec, list) else
                    spec.get("high") if isinstance(spec, dict) else None)
            out.append(f"{arm}'s {noun} at {budget} labels (trial {choice['trial'] + 1}) was still "
                       f"learning when it stopped: best in the last tenth of its {epochs} "
                       f"epochs (best epoch{'s' if len(late) > 1 else ''} "
                       f"{' and '.join(str(r['best_epoch']) for r in late)}) on "
                       f"{len(late)} of {len(runs)} tuning seeds, at a constant rate; a longer "
                       f"schedule may do better"
                       + (f" ({epochs} epochs is the most the space tries: widen its range)"
                          if most == epochs else ""))
    return out
