"""The report of an ablation folder, read from its run folders alone (no caches).

    stackae report runs/ablate/demo

Writes into the folder: REPORT.md (tables, verdicts, figures, setup, the reproducing command),
report.json (the same as data), results.csv (one row per finished cell) and figures/*.png.
Its words are report_text.py's, its warnings about the runs report_checks.py's, and a tuning's
section (or, before its final cells, the whole report) report_tuning.py's numbers in
report_tuning_text.py's words.
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from . import figures, stats
from .config import OBJECTIVES
from .config_grid import RANDOM_INITS, AblateConfig
from .proposals import at_edge
from .report_checks import (by_condition, outlying_seeds, pretrained_seconds, read_records,
                            still_learning, undertrained)
from .report_text import markdown
from .report_tuning import tuning_section, write_progress
from .runlog import RunError, atomic_write, write_json

CSV_COLUMNS = ("id", "init", "kind", "depth", "budget", "labels", "seed", "test_error",
               "best_val_error", "best_epoch", "epochs_run", "seconds", "pretrain")
ERROR_COLUMNS = ("test_error", "best_val_error")


def budget_order(b: str) -> float:
    return float("inf") if b == "all" else int(b)


def read_folder(folder: Path) -> dict:
    """grid.json, the results.jsonl records (last line per cell wins) and each cell's result.json
    curves and config.json provenance."""
    records, bad = read_records(folder / "results.jsonl")
    if not records:
        raise RunError(f"{folder} has no results (expected results.jsonl written by stackae "
                       f"ablate); nothing to report")
    grid = json.loads((folder / "grid.json").read_text()) if (folder / "grid.json").exists() else {}
    if "config" in grid:  # settings as this version names them
        grid["config"] = AblateConfig.migrate(grid["config"])
    curves, provenance = {}, []
    for rec in records.values():
        cell = folder / rec["folder"]
        if (cell / "result.json").exists():
            curves[rec["id"]] = json.loads((cell / "result.json").read_text()).get("curves", {})
        if (cell / "config.json").exists():
            p = json.loads((cell / "config.json").read_text()).get("provenance", {})
            provenance.append({k: p.get(k) for k in VERSION_NAMES})
    return {"grid": grid, "records": sorted(records.values(), key=lambda r: r["id"]),
            "bad_lines": bad, "curves": curves, "provenance": provenance}


def reference_arm(inits) -> str | None:
    """The random-init arm every other arm is compared with."""
    if "random" in inits:
        return "random"
    return next((i for i in inits if i in RANDOM_INITS), None)


def analyse(records: list[dict], inits, depths, budgets) -> tuple[list, list]:
    """Conditions (init x budget x depth) and paired comparisons (arm - reference per budget,
    Holm-corrected across budgets for each arm and depth)."""
    groups = by_condition(records)
    conditions = [{"init": i, "depth": d, "budget": b,
                   **stats.summarize([r["test_error"] for r in rs]),
                   "seeds": sorted(r["seed"] for r in rs)}
                  for d in depths for b in budgets for i in inits if (rs := groups.get((d, b, i)))]
    ref = reference_arm(inits)
    comparisons = []
    for depth in depths:
        for arm in [i for i in inits if ref and i != ref]:
            family = []
            for budget in budgets:
                by = {(r["init"], r["seed"]): r["test_error"] for r in records
                      if r["depth"] == depth and r["budget"] == budget}
                seeds = sorted(s for (i, s) in by if i == arm and (ref, s) in by)
                if seeds:
                    family.append({"arm": arm, "reference": ref, "depth": depth, "budget": budget,
                                   "seeds": seeds, **stats.paired([by[(arm, s)] for s in seeds],
                                                                  [by[(ref, s)] for s in seeds])})
            for key in ("p_t", "p_wilcoxon"):
                for c, adj in zip(family, stats.holm([c[key] for c in family])):
                    c[f"{key}_holm"] = adj
            for c in family:
                c["verdict"] = stats.verdict(arm, ref, c, len(family))
                c["warnings"] = stats.warnings_for(c["n"], len(family))
            comparisons += family
    return conditions, comparisons


# what a cell's provenance records that can differ between cells, as the warning names it
VERSION_NAMES = {"device": "devices", "stackae": "stackae versions", "torch": "torch versions",
                 "python": "python versions", "git_commit": "git commits",
                 "git_dirty": "uncommitted changes"}


def setup(folder: Path, grid: dict, records: list[dict], provenance: list[dict]) -> dict:
    cfg, sizes = grid.get("config", {}), grid.get("data", {})
    seconds = pretrained_seconds(folder / "runs" / "pretrain").values()
    copied = Counter(str(Path(json.loads(p.read_text())["from"]).parent)
                     for p in sorted((folder / "runs" / "pretrain").glob("*/copied.json")))
    return {"config": cfg, "data": sizes, "command": grid.get("command"),
            "copied_stacks": dict(sorted(copied.items())),
            "versions": sorted(Counter(json.dumps(p, sort_keys=True) for p in provenance).items()),
            "finetune_seconds": sum(r["seconds"] for r in records),
            "pretrain_runs": len(seconds) + sum(copied.values()),
            "pretrain_seconds": sum(seconds)}


def x_positions(records, budgets) -> dict:
    """Where a budget sits on the x axis: its number, 'all' at the labels it actually used."""
    full = max((r["labels"] for r in records if r["budget"] == "all"), default=None)
    return {b: (full if b == "all" else int(b)) for b in budgets}


def draw(folder: Path, rep: dict, records: list[dict], curves: dict) -> list[str]:
    out = folder / "figures"
    out.mkdir(exist_ok=True)
    inits, depths, budgets = rep["inits"], rep["depths"], rep["budgets"]
    x_of = x_positions(records, budgets)
    made = []
    figures.error_vs_budget(rep["conditions"], inits, depths, budgets, x_of,
                            out / "error_vs_budget.png")
    made.append("figures/error_vs_budget.png")
    by_condition = {}
    for r in records:
        if curves.get(r["id"], {}).get("val_error"):
            by_condition.setdefault((r["depth"], r["budget"], r["init"]), []).append(
                curves[r["id"]]["val_error"])
    figures.learning_curves(by_condition, inits, depths, budgets, out / "learning_curves.png")
    figures.per_seed(records, inits, depths, budgets, out / "per_seed.png")
    made += ["figures/learning_curves.png", "figures/per_seed.png"]
    if rep.get("tuning", {}).get("history"):
        figures.tuning_history(rep["tuning"]["history"], inits, out / "tuning.png")
        made.append("figures/tuning.png")
    if filter_figure(folder, rep, out / "filters.png"):
        made.append("figures/filters.png")
    return made


def filter_figure(folder: Path, rep: dict, path: Path) -> bool:
    """First-layer filters of a pretrained stack beside the same layer at random init. Where the
    stacks are gone (a clone of committed results: checkpoints are not in git) the figure drawn
    from them earlier is kept."""
    from .checkpoint import load_stack
    from .network import build_classifier, init_random
    pre = [i for i in rep["inits"] if i in OBJECTIVES]
    stacks = sorted(folder.glob(f"runs/pretrain/{pre[0]}-d*-s*/stack.pt")) if pre else []
    if not stacks:
        return bool(pre) and path.exists()
    stacks.sort(key=lambda p: (-int(p.parent.name.split("-d")[1].split("-")[0]),
                               int(p.parent.name.rsplit("-s", 1)[1])))
    stack = load_stack(stacks[0])
    if not stack.get("image_shape"):
        return False
    seed = int(stacks[0].parent.name.rsplit("-s", 1)[1])
    layer = stack["layers"][0]
    n = min(100, layer["width"])
    ref = reference_arm(rep["inits"])
    scheme = RANDOM_INITS[ref] if ref else "default"
    model = build_classifier(stack["input_dim"], [layer["width"]], layer["activation"],
                             stack["n_classes"])
    init_random(model, scheme, seed)
    figures.filters([(f"{pre[0]} (pretrained), seed {seed}", layer["weight"][:n].numpy()),
                     (f"{ref or 'random'} ({scheme} init), seed {seed}",
                      model[0].weight.detach()[:n].numpy())], stack["image_shape"], path)
    return True


def write_csv(path: Path, records: list[dict]) -> None:
    """One row per cell. An error rate computed in float32 is written as the shortest decimal
    that is that float32 (0.0123, not its float64 widening 0.012299999594688416)."""
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows({**r, **{k: str(np.float32(r[k])) for k in ERROR_COLUMNS
                                 if r.get(k) is not None and float(np.float32(r[k])) == r[k]}}
                        for r in records)
    atomic_write(path, write)


def build(folder: Path) -> tuple[dict, dict]:
    """report.json's content, and what was read to make it."""
    seen = read_folder(folder)
    grid, records = seen["grid"], seen["records"]
    cfg = grid.get("config", {})
    inits = [i for i in cfg.get("inits", []) if any(r["init"] == i for r in records)] or \
        sorted({r["init"] for r in records})
    depths = sorted({r["depth"] for r in records})
    budgets = sorted({r["budget"] for r in records}, key=budget_order)
    conditions, comparisons = analyse(records, inits, depths, budgets)
    planned = [c["id"] for c in grid.get("cells", [])]
    done = {r["id"] for r in records}
    warnings = sorted({w for c in comparisons for w in c["warnings"]})
    warnings += undertrained(records, seen["curves"], inits, depths, budgets,
                             cfg.get("finetune_lr_schedule", "constant"))
    warnings += outlying_seeds(records, seen["curves"], inits, depths, budgets)
    if planned and len(done & set(planned)) < len(planned):
        warnings.insert(0, f"{len(planned) - len(done & set(planned))} of {len(planned)} planned "
                           f"cells have no result yet; the tables cover finished cells only")
    if seen["bad_lines"]:
        warnings.append(f"{seen['bad_lines']} unreadable line(s) in results.jsonl were skipped")
    if reference_arm(inits) is None:
        warnings.append("no random-init arm in the grid, so no paired comparison is made")
    info = setup(folder, grid, records, seen["provenance"])
    differ = [name for key, name in VERSION_NAMES.items()
              if len({p.get(key) for p in seen["provenance"]}) > 1]
    if differ:
        warnings.append(f"cells ran with different {', '.join(differ)} (see Setup)")
    rep = {"folder": str(folder), "inits": inits, "depths": depths, "budgets": budgets,
           "reference": reference_arm(inits), "conditions": conditions,
           "comparisons": comparisons, "warnings": warnings, "setup": info,
           "cells": {"planned": len(planned), "finished": len(done),
                     "missing": sorted(set(planned) - done)}}
    if (folder / "tune.json").exists():  # a stackae tune folder: its space and choices
        rep["tuning"] = tuning_section(folder, inits, cfg.get("min_epoch_examples", 0))
        warnings += at_edge(rep["tuning"]["space"], rep["tuning"].get("choices", {}))
        warnings += still_learning(folder, rep["tuning"]["space"],
                                   rep["tuning"].get("choices", {}))
    return rep, seen


def write_report(folder: str | Path) -> dict:
    """Read the folder, write REPORT.md, report.json, results.csv and figures/; return the report.
    A tuning whose final cells have not run gets a report of its trials so far (report_tuning)."""
    folder = Path(folder)
    if (folder / "tune.json").exists() and not read_records(folder / "results.jsonl")[0]:
        return write_progress(folder)
    rep, seen = build(folder)
    rep["figures"] = draw(folder, rep, seen["records"], seen["curves"])
    write_csv(folder / "results.csv", seen["records"])
    write_json(folder / "report.json", rep)
    text = markdown(rep)
    atomic_write(folder / "REPORT.md", lambda tmp: Path(tmp).write_text(text))
    return rep
