"""The tuning part of a report: a `stackae tune` folder's search space, choices, trials and their
compute (the Tuning section of REPORT.md), and, while its final cells have not run, a report of
the trials so far.

    stackae report runs/tune/budgets      # during the tuning: the trials so far; after: the full report

The progress report (REPORT.md, report.json, figures/tuning.png) reads no test error, as none has
been read yet; the full report replaces it once the final cells have run.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import figures
from .proposals import at_edge
from .report_checks import pretrained_seconds, read_records, still_learning, timed
from .report_tuning_text import progress_markdown
from .runlog import RunError, atomic_write, write_json
from .schema import ConfigError
from .space import read_tuning
from .tune import best_trial, trials_of


def tuning_trials(folder: Path, inits) -> dict:
    """Each label budget's finished trials (trials.jsonl records, every arm), in trial order."""
    return {path.name[1:]: sorted((t for arm in inits for t in trials_of(path, arm)),
                                  key=lambda t: t["number"])
            for path in sorted((folder / "tune").glob("n*")) if (path / "trials.jsonl").exists()}


# what trial_compute counts, in all and per arm
COMPUTE = ("finetunes", "finetune_seconds", "finetune_example_passes", "pretrain_runs",
           "pretrain_seconds")


def trial_compute(folder: Path, inits, min_epoch_examples: int) -> dict:
    """What the trials cost, in all and per arm: their fine-tunes, with seconds and the training
    examples they passed over (a pruned one's to where it stopped), and the stacks the trials
    pretrained, with seconds. Seconds are each network's share of its batch's wall time, so
    arms batched together share it evenly; the example passes are each arm's own."""
    from .finetune import repeats
    per_arm = {arm: dict.fromkeys(COMPUTE, 0) for arm in inits}
    for trial in sorted((folder / "tune").glob("n*/trial-*")):
        for r in read_records(trial / "results.jsonl", timed)[0].values():
            c = per_arm.setdefault(r["init"], dict.fromkeys(COMPUTE, 0))
            try:  # the run's own (a tuned min_epoch_examples differs from the grid's)
                least = json.loads((trial / r["folder"] / "config.json").read_text())[
                    "min_epoch_examples"]
            except (OSError, ValueError, KeyError, TypeError):
                least = min_epoch_examples
            c["finetunes"] += 1
            c["finetune_seconds"] += r["seconds"]
            c["finetune_example_passes"] += (r["epochs_run"] * r["labels"]
                                             * repeats(max(r["labels"], 1), least))
        for name, seconds in pretrained_seconds(trial / "pretrain").items():  # <arm>-d<D>-s<S>
            c = per_arm.setdefault(name.split("-d")[0], dict.fromkeys(COMPUTE, 0))
            c["pretrain_runs"] += 1
            c["pretrain_seconds"] += seconds
    return {**{k: sum(c[k] for c in per_arm.values()) for k in COMPUTE},
            "per_arm": per_arm}


def tuning_section(folder: Path, inits, min_epoch_examples: int) -> dict:
    """report.json's "tuning": tune.json (space, budget, choices), the cells adopted from chosen
    trials, the trials' compute (trial_compute) and every trial."""
    return {**read_tuning(folder),
            "adopted_cells": sorted(p.parent.name for p in (
                folder / "runs" / "finetune").glob("*/copied.json")),
            "compute": trial_compute(folder, inits, min_epoch_examples),
            "history": tuning_trials(folder, inits)}


def progress(folder: Path) -> dict:
    """report.json of a tuning whose final cells have not run: the trials so far and each arm's
    best so far at each budget."""
    from .ablate import load_config
    try:
        cfg = load_config(folder)
    except ConfigError as e:  # its settings, which stackae tune wrote before any trial
        raise RunError(f"{folder} is a tuning whose settings cannot be read: {e.message}")
    inits = list(cfg.inits)
    t = {**read_tuning(folder), "history": tuning_trials(folder, inits), "best_so_far": {}}
    if not any(t["history"].values()):
        raise RunError(f"{folder} is a tuning with no finished trial yet; nothing to report "
                       f"until one finishes (stackae tune --out {folder} --resume continues it)")
    for arm in inits:
        for b, recs in t["history"].items():
            if mine := [r for r in recs if r["arm"] == arm]:
                r = best_trial(mine, t["trials"])
                t["best_so_far"].setdefault(arm, {})[b] = {
                    "settings": r["settings"], "trial": r["number"], "val_error": r["val_error"],
                    "diverged": r["diverged"]}
    history = {b: t["history"].get(b, []) for b in cfg.labels}
    finished = {b: {arm: sum(r["arm"] == arm for r in recs) for arm in inits}
                for b, recs in history.items()}
    running = any(n < t["trials"] for per in finished.values() for n in per.values())
    return {"folder": str(folder), "inits": inits, "budgets": list(cfg.labels),
            "in_progress": True, "tuning": t,
            "finished_trials": finished,
            "warnings": at_edge(t["space"], t["best_so_far"], so_far=running)
            + still_learning(folder, t["space"], t["best_so_far"],
                             "best trial so far" if running else "choice")}


def write_progress(folder: Path) -> dict:
    """REPORT.md, report.json and figures/tuning.png of a tuning whose final cells have not run."""
    rep = progress(folder)
    (folder / "figures").mkdir(exist_ok=True)
    figures.tuning_history(rep["tuning"]["history"], rep["inits"], folder / "figures" / "tuning.png")
    rep["figures"] = ["figures/tuning.png"]
    write_json(folder / "report.json", rep)
    text = progress_markdown(rep)
    atomic_write(folder / "REPORT.md", lambda tmp: Path(tmp).write_text(text))
    return rep
