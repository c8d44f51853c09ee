"""The final runs of a tuning: each (arm, budget)'s cells over every seed with its chosen
settings, the test set read once per cell, as an ordinary paired ablation in the tuning's folder;
a tuning seed's cell is the chosen trial's own run, adopted rather than trained again.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .config_grid import AblateConfig
from .grid import Cell
from .runlog import copy_run_folder
from .space import PER_ARM, applied
from .tune import one_k_groups


def final(cfg: AblateConfig, out: Path, cells: list[Cell], choices: dict, device, say) -> None:
    """Each (arm, budget)'s cells over every seed with its chosen settings, test read once; arms
    whose choices differ at most in PER_ARM settings train together. A tuning seed's cell is the
    chosen trial's own run (adopt_trial_cell), not trained again."""
    from .ablate import run_cells
    for c in cells:
        adopt_trial_cell(cfg, out, c, choices[c.init][c.budget], device, say)
    for budget in cfg.labels:
        chosen = {arm: applied(choices[arm][budget]["settings"]) for arm in cfg.inits}
        for together, per_arm in one_k_groups(chosen):
            mine = [c for c in cells if c.init in together and c.budget == budget]
            if mine:
                shared = {k: v for k, v in chosen[together[0]].items() if k not in PER_ARM}
                run_cells(dataclasses.replace(cfg, **shared), out, mine, device, say,
                          per_arm=per_arm)


def adopt_trial_cell(cfg: AblateConfig, out: Path, cell: Cell, choice: dict, device,
                     say) -> None:
    """Make a tuning seed's final cell from the chosen trial's run of it, when that ran with the
    settings the cell would (same seed, so the same data split, batch order and model
    selection) from the same stack file: its folder is copied and the test set read once, on its
    selected model.pt. (A trial that pretrained its own stack started from another file, so the
    pretraining budget's cells of a tuning that tunes pretraining train again; so does a cell
    whose trial network was pruned, which stopped before its last epoch.)"""
    from .ablate import Job, job_finetune_config
    from .artifacts import load_model
    from .config import DataConfig, load_json, to_dict
    from .data import load
    from .finetune import tested
    from .train import autocast
    target = out / "runs" / "finetune" / cell.id
    trial = out / "tune" / f"n{cell.budget}" / f"trial-{choice['trial']:03d}" / cell.id
    if target.exists() or not all((trial / f).exists() for f in ("result.json", "model.pt")):
        return
    want = to_dict(job_finetune_config(dataclasses.replace(cfg, **applied(choice["settings"])),
                                       Job(cell, target, out / "results.jsonl",
                                           out / "runs" / "pretrain")))
    if load_json(trial / "result.json").get("pruned"):  # stopped early: not the whole run
        return
    saved = load_json(trial / "config.json")
    if any(saved.get(k) != v and not (k == "init" and same_grid_stack(saved[k], v))
           for k, v in want.items() if k not in ("read_test", "device", "compile")):
        return
    d = load(DataConfig(dataset=cfg.dataset, data=cfg.data, train_size=cfg.train_size,
                        val_size=cfg.val_size, seed=cell.seed, device=cfg.device), device)
    error = tested(load_model(trial).to(device), d, autocast(cfg.precision, device))
    result = {**load_json(trial / "result.json"), "test_error": error}
    copy_run_folder(trial, target, {"result.json": result})
    say(f"{cell.id}: trial {choice['trial'] + 1}'s run (the chosen settings, this seed), "
        f"test error {100 * result['test_error']:.2f}% read once on its selected model")


def same_grid_stack(saved, want) -> bool:
    """Whether a trial's recorded stack is the grid's stack a final cell starts from, in a tuning
    folder moved or copied since: stack paths are recorded whole, and a stack of the grid is
    <folder>/runs/pretrain/<key>/stack.pt (a trial's own stacks are under its trial folder)."""
    a, b = Path(str(saved)).parts[-4:], Path(str(want)).parts[-4:]
    return a == b and a[:2] == ("runs", "pretrain")
