"""An ablation grid's plan: its cells, shards, work estimate, command line and --dry-run text
(its settings, AblateConfig, live in config_grid.py).

A grid is inits x seeds x label budgets (x depths); each cell is one fine-tuning run, and the
pretrained arms of one (objective, seed, depth) share one pretraining run. `expand` lists the
cells in a fixed order and `shard` cuts that list into contiguous parts for parallel processes.
ablate.py runs them.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import OBJECTIVES, from_dict, to_dict  # noqa: F401
from .config_grid import ABLATE_INITS, ABLATE_PRESETS, RANDOM_INITS, AblateConfig  # noqa: F401


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run of the grid."""
    init: str
    depth: int
    budget: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.init}-d{self.depth}-n{self.budget}-s{self.seed}"

    @property
    def pretrain(self) -> Optional[str]:
        """The pretraining run this cell starts from (None for a random-init arm)."""
        return f"{self.init}-d{self.depth}-s{self.seed}" if self.init in OBJECTIVES else None


def expand(cfg: AblateConfig) -> list[Cell]:
    """Every cell, ordered by seed first (one data load per seed), then depth, init, budget."""
    return [Cell(init, depth, budget, seed) for seed in cfg.seeds for depth in cfg.depth_list
            for init in cfg.inits for budget in cfg.labels]


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 1 <= i <= n; ValueError otherwise."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"expected i/n (e.g. 2/4), got {text!r}")
    if not 1 <= i <= n:
        raise ValueError(f"needs 1 <= i <= n, got {text!r}")
    return i, n


def split(cells: list, n: int) -> list[list]:
    """n contiguous, nearly equal slices (sizes differ by at most one), in order; contiguous keeps
    the cells of one seed together, so a slice loads few datasets and pretrains few stacks."""
    return [cells[k * len(cells) // n:(k + 1) * len(cells) // n] for k in range(n)]


def shard(cells: list, i: int, n: int) -> list:
    """Shard i of n (1-based): the shards of a grid partition it exactly."""
    return split(cells, n)[i - 1]


# (training images, test images, input width, classes) of the datasets known without loading them
DATASET_SIZES = {"mnist": (60000, 10000, 784, 10), "fashion-mnist": (60000, 10000, 784, 10),
                 "kmnist": (60000, 10000, 784, 10), "emnist-digits": (240000, 40000, 784, 10),
                 "emnist-letters": (124800, 20800, 784, 26),
                 "emnist-balanced": (112800, 18800, 784, 47),
                 "emnist-mnist": (60000, 10000, 784, 10),
                 "emnist-byclass": (697932, 116323, 784, 62),
                 "emnist-bymerge": (697932, 116323, 784, 47)}


def data_sizes(cfg: AblateConfig) -> dict:
    """Training/validation/test image counts, input width and classes, without loading a known
    dataset (user files are read once to count them); sizes that do not fit are refused."""
    from .checks import data_sizes as checked
    return checked(cfg, (), known=DATASET_SIZES)


def estimate(cfg: AblateConfig, cells: list[Cell], sizes: dict, copied=frozenset()) -> dict:
    """Work in example-passes and rough FLOPs (a multiply-add is 2 FLOPs; backward is twice
    forward; an autoencoder layer is encoder plus decoder). The stacks named in `copied` come
    from elsewhere and are no pretraining work."""
    keys = sorted({c.pretrain for c in cells if c.pretrain} - set(copied))
    pre_passes = pre_flops = 0
    for key in keys:
        depth = int(key.split("-d")[1].split("-")[0])
        widths = (sizes["input_dim"],) + cfg.layers[:depth]
        epochs = cfg.pretrain_config("plain", 0, depth).epochs
        for k in range(depth):
            e = epochs[k] if len(epochs) > 1 else epochs[0]
            pre_passes += e * sizes["train"]
            pre_flops += e * sizes["train"] * 12 * widths[k] * widths[k + 1]
    ft_passes = ft_flops = 0
    for c in cells:
        shape = (sizes["input_dim"],) + cfg.layers[:c.depth] + (sizes["classes"],)
        macs = sum(a * b for a, b in zip(shape, shape[1:]))
        n = sizes["train"] if c.budget == "all" else int(c.budget)
        per_epoch = max(1, -(-cfg.min_epoch_examples // max(n, 1))) * n
        ft_passes += cfg.finetune_epochs * per_epoch  # validation every epoch, test once
        ft_flops += (cfg.finetune_epochs * (6 * per_epoch + 2 * sizes["val"])
                     + 2 * sizes["test"]) * macs
    return {"pretrain_runs": len(keys), "pretrain_example_passes": pre_passes,
            "pretrain_tflop": pre_flops / 1e12, "finetune_cells": len(cells),
            "finetune_example_passes": ft_passes, "finetune_tflop": ft_flops / 1e12}


def command(cfg: AblateConfig, out: Path) -> str:
    """The shortest `stackae ablate` command line that rebuilds this grid into `out`."""
    best = None
    for preset, values in ABLATE_PRESETS.items():
        base = from_dict(AblateConfig, {**to_dict(AblateConfig()), **values})
        args = ["--preset", preset] if preset != "default" else []
        for name, v in to_dict(cfg).items():
            if v != to_dict(base)[name] and v is not None:
                flag = "--" + name.replace("_", "-")
                if isinstance(v, bool):
                    args.append(flag if v else f"--no-{name.replace('_', '-')}")
                else:
                    args += [flag, ",".join(map(str, v)) if isinstance(v, list) else str(v)]
        if best is None or len(args) < len(best):
            best = args
    return shlex.join(["stackae", "ablate", *best, "--out", str(out)])


def finished(out: Path, cell: Cell) -> bool:
    return (out / "runs" / "finetune" / cell.id / "result.json").exists()


def plan(cfg: AblateConfig, out: Path, cells: list[Cell], sizes: dict) -> dict:
    """The content of grid.json."""
    return {"config": to_dict(cfg), "command": command(cfg, out), "data": sizes,
            "cells": [{"id": c.id, "init": c.init, "depth": c.depth, "budget": c.budget,
                       "seed": c.seed, "pretrain": c.pretrain} for c in cells],
            "pretrain": sorted({c.pretrain for c in cells if c.pretrain}),
            "estimate": estimate(cfg, cells, sizes)}


def arm_names(cfg: AblateConfig) -> list[str]:
    """Each arm with what it is: 'denoising (pretrained)', 'xavier (random init: xavier)'."""
    return [f"{i} ({'pretrained' if i in OBJECTIVES else 'random init: ' + RANDOM_INITS[i]})"
            for i in cfg.inits]


def copied_stacks(cfg: AblateConfig, out: Path, cells: list[Cell]) -> tuple[set, set]:
    """These cells' stacks that are not pretrained here: (those copied already, recorded by
    copied.json; those still to copy, which --stacks-from holds with their settings)."""
    from .checks import matching_stack, stacks_source
    source, done, wanted = stacks_source(cfg.stacks_from), set(), {}
    for c in cells:
        folder = out / "runs" / "pretrain" / (c.pretrain or "")
        if c.pretrain and (folder / "copied.json").exists():
            done.add(c.pretrain)
        elif c.pretrain and not folder.exists():
            wanted[c.pretrain] = cfg.pretrain_config(c.init, c.seed, c.depth)
    return done, {k for k, w in wanted.items() if source and matching_stack(source / k, w)}


def describe_plan(cfg: AblateConfig, out: Path, cells: list[Cell], mine: list[Cell],
                  sizes: dict) -> list[str]:
    """The --dry-run text."""
    elsewhere = set().union(*copied_stacks(cfg, out, cells))
    est = estimate(cfg, cells, sizes, elsewhere)
    arms = arm_names(cfg)
    done = {c.id for c in cells if finished(out, c)}
    keys = sorted({c.pretrain for c in mine if c.pretrain})
    from .data import on_this_machine, raw_folder  # data.py loads torch: only when planning
    pre_done = sum((out / "runs" / "pretrain" / k / "stack.pt").exists() for k in keys)
    copies = len(copied_stacks(cfg, out, mine)[1])
    lines = [f"ablation plan for {out}",
             f"  arms:    {', '.join(arms)}",
             f"  seeds:   {', '.join(map(str, cfg.seeds))}",
             f"  budgets: {', '.join(cfg.labels)} labelled images",
             "  depths:  " + ", ".join("-".join(map(str, (sizes['input_dim'],) + cfg.layers[:d]))
                                       for d in cfg.depth_list),
             f"  data:    {cfg.data or cfg.dataset}: {sizes['train']:,} training, "
             f"{sizes['val']:,} validation, {sizes['test']:,} test images"
             + ("" if cfg.data or on_this_machine(cfg.dataset) else
                f" (not on this machine yet: the run downloads it, or put its raw files in "
                f"{raw_folder(cfg.dataset)})"),
             f"  cells:   {len(cells)} fine-tunes, {len(done)} finished; this run: "
             f"{len(mine)} cells, {sum(c.id not in done for c in mine)} to do",
             f"  pretraining: {len(keys)} runs for these cells, {pre_done} finished"
             + (f", {copies} to copy from {cfg.stacks_from}" if cfg.stacks_from else ""),
             f"  work (whole grid): pretraining {est['pretrain_example_passes']:,} example-passes "
             f"(~{est['pretrain_tflop']:.2g} TFLOP"
             + ("; the copied stacks are none of it" if elsewhere else "")
             + f"); fine-tuning {est['finetune_example_passes']:,} "
             f"example-passes plus evaluation (~{est['finetune_tflop']:.2g} TFLOP)",
             f"  command: {command(cfg, out)}", "  cells of this run:"]
    from .checkpoint import resume_epoch

    def status(c):
        if c.id in done:
            return "finished"
        at = resume_epoch(out / "runs" / "finetune" / c.id)
        return f"part-way: resumes after epoch {at} of {cfg.finetune_epochs}" if at else "to do"
    lines += [f"    {c.id:<28} {status(c)}" for c in mine]
    return lines
