"""Replay a finished tuning's trials through `stackae tune --prune-after`'s pruner: which trials'
networks it would have stopped, how many fine-tuning epochs that saves, and whether each arm's
choice would change. Reads the trials' result.json curves; trains nothing.

    python scripts/prune_replay.py runs/reference/budgets-tuned --after 5
    python scripts/prune_replay.py runs/tune/demo --after 10 --budget 1000

A trial pruned in the replay does not count among the finished trials of later ones, and under a
cosine schedule a trial is compared only with trials of as many epochs (as in a real pruned
tuning); later trials' settings are the ones the unpruned tuning drew, which a pruned
tuning's TPE might not have drawn.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from stackae.ablate import load_config
from stackae.proposals import pruner, rate_schedule
from stackae.tune import trials_of


def replay(cfg, folder: Path, arm: str, after: int) -> dict:
    """The arm's trials at one budget (folder: tune/n<budget>) replayed with pruning from
    epoch `after` (cfg: the tuning's grid): each trial's score and whether it was pruned, and
    the epochs run."""
    finished, rows, run, total = [], [], 0, 0  # finished: each unpruned trial's curves by cell
    for rec in trials_of(folder, arm):
        mine = rate_schedule(cfg, rec["settings"])  # compared with trials of the same schedule
        if rec["diverged"]:
            rows.append({"number": rec["number"], "pruned": False, "score": 1.0, "was": 1.0})
            continue
        cells = sorted((folder / f"trial-{rec['number']:03d}").glob(f"{arm}-*"))
        curves = [json.loads((c / "result.json").read_text())["curves"]["val_error"]
                  for c in cells]
        stopped, bests = False, []
        for j, curve in enumerate(curves):
            stops = pruner([f[j] for key, f in finished if key == mine], after)
            at = next((e for e in range(1, len(curve)) if stops(curve[:e])), len(curve))
            stopped |= at < len(curve)
            run, total = run + at, total + len(curve)
            bests.append(min(curve[:at]))
        rows.append({"number": rec["number"], "pruned": stopped,
                     "score": sum(bests) / len(bests), "was": rec["val_error"]})
        if not stopped:
            finished.append((mine, curves))
    return {"trials": rows, "epochs_run": run, "epochs": total}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tuning", type=Path, help="a stackae tune folder")
    ap.add_argument("--after", type=int, required=True, help="--prune-after's epoch")
    ap.add_argument("--budget", default=None, help="one label budget (default: every one)")
    args = ap.parse_args(argv)
    tuning = json.loads((args.tuning / "tune.json").read_text())
    cfg = load_config(args.tuning)
    budgets = [args.budget] if args.budget else sorted(
        p.name[1:] for p in (args.tuning / "tune").glob("n*"))
    for budget in budgets:
        folder = args.tuning / "tune" / f"n{budget}"
        if not (folder / "trials.jsonl").exists():
            continue
        arms = sorted({json.loads(line)["arm"] for line in
                       (folder / "trials.jsonl").read_text().splitlines()})
        for arm in arms:
            r = replay(cfg, folder, arm, args.after)
            if not r["trials"]:
                continue
            pruned = [t["number"] + 1 for t in r["trials"] if t["pruned"]]
            best = min(r["trials"], key=lambda t: (t["score"], t["number"]))
            was = min(r["trials"], key=lambda t: (t["was"], t["number"]))
            print(f"{arm} at {budget} labels, {len(r['trials'])} of {tuning['trials']} trials: "
                  f"pruned {', '.join(map(str, pruned)) or 'none'}; epochs run "
                  f"{r['epochs_run']} of {r['epochs']} ({r['epochs_run'] / r['epochs']:.0%}); "
                  f"choice trial {best['number'] + 1} ({100 * best['score']:.2f}%), "
                  + ("the same as unpruned" if best["number"] == was["number"] else
                     f"unpruned trial {was['number'] + 1} ({100 * was['was']:.2f}%)"))


if __name__ == "__main__":
    main()
