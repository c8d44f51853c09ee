"""An ablation grid's cells (its settings, AblateConfig, live in config.py).

A grid is inits x seeds x label budgets (x depths); each cell is one fine-tuning run, and the
pretrained arms of one (objective, seed, depth) share one pretraining run. `expand` lists the
cells in a fixed order and `shard` cuts that list into contiguous parts for parallel processes.
ablate.py runs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .config import ABLATE_INITS, ABLATE_PRESETS, OBJECTIVES, RANDOM_INITS, AblateConfig  # noqa: F401


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
