"""An ablation grid: its settings (AblateConfig, presets) and its cells.

A grid is inits x seeds x label budgets (x depths); each cell is one fine-tuning run, and the
pretrained arms of one (objective, seed, depth) share one pretraining run. `expand` lists the
cells in a fixed order and `shard` cuts that list into contiguous parts for parallel processes.
ablate.py runs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .config import (ACTIVATIONS, CORRUPTIONS, DATASETS, DEVICES, LR_SCHEDULES, OBJECTIVES,
                     OPTIMIZERS, ConfigError, FinetuneConfig, PretrainConfig, check, opt)

# Random-init arms of an ablation and the FinetuneConfig.init_scheme each one means.
RANDOM_INITS = {"random": "default", "xavier": "xavier", "kaiming": "kaiming", "uniform": "uniform"}
ABLATE_INITS = OBJECTIVES + tuple(RANDOM_INITS)

# --preset NAME: values that replace AblateConfig's defaults (flags and --config still win).
ABLATE_PRESETS = {
    "default": {},
    "full": {"layers": (1000, 1000, 500), "seeds": tuple(range(10)),
             "labels": ("100", "1000", "10000", "all"), "inits": ("denoising", "random"),
             "pretrain_epochs": (10,), "finetune_epochs": 30},
}

# AblateConfig field -> the PretrainConfig / FinetuneConfig field it sets, where the names differ.
ABLATE_TO_PRETRAIN = {"pretrain_epochs": "epochs", "pretrain_lr": "lr",
                      "pretrain_optimizer": "optimizer", "pretrain_batch_size": "batch_size"}
ABLATE_TO_FINETUNE = {"finetune_epochs": "epochs", "finetune_lr": "lr",
                      "finetune_lr_schedule": "lr_schedule",
                      "finetune_optimizer": "optimizer", "finetune_batch_size": "batch_size"}


def _renamed(build, names: dict):
    """Run `build`, renaming the field of a ConfigError it raises (epochs -> pretrain_epochs)."""
    try:
        build()
    except ConfigError as e:
        raise ConfigError(names.get(e.name, e.name), str(e))


@dataclass(frozen=True)
class AblateConfig:
    inits: tuple[str, ...] = opt(("denoising", "random"), "Arms to compare: pretraining objectives "
                                 "(plain, denoising, sparse, contractive, rbm) and random-init "
                                 "schemes (random = torch default, xavier, kaiming, uniform).",
                                 choices=ABLATE_INITS)
    seeds: tuple[int, ...] = opt(tuple(range(8)), "Seeds (8 is the fewest with which the "
                                 "Wilcoxon test can reach p < 0.05 after Holm's correction across "
                                 "4 label budgets). One seed gives every arm the "
                                 "same validation split, labelled subset, head and batch order "
                                 "(a paired design).")
    labels: tuple[str, ...] = opt(("100", "1000", "10000", "all"), "Label budgets: numbers of "
                                  "labelled training images (seeded, class-balanced), or 'all'.")
    depths: tuple[int, ...] = opt((0,), "Network depths to compare: the first d widths of "
                                  "--layers; 0 = all of them.")
    dataset: str = opt("mnist", "Dataset: the bundled MNIST or a torchvision MNIST-family set.",
                       choices=DATASETS)
    data: Optional[str] = opt(None, "Your own data: a folder of IDX files or an .npz with x_train, "
                              "y_train, x_test, y_test. Overrides --dataset.", path=True)
    train_size: Optional[int] = opt(None, "Use a seeded subset of this many training images (after "
                                    "the validation split) for pretraining and fine-tuning; "
                                    "default all.")
    val_size: int = opt(10000, "Images held out of the training set for validation.")
    device: str = opt("auto", "Where tensors live: auto picks CUDA when available.", choices=DEVICES)
    layers: tuple[int, ...] = opt((256, 256), "Hidden widths, bottom to top. Smaller than "
                                  "pretrain's 1000,1000,500 so that the default grid runs in about "
                                  "5 minutes on 2 CPU cores; --preset full uses 1000,1000,500.")
    activation: str = opt("sigmoid", "Hidden unit nonlinearity of every arm.", choices=ACTIVATIONS)
    tied: bool = opt(True, "Tie decoder weights to the encoder's transpose.")
    noise: tuple[float, ...] = opt((0.25,), "Corruption level of denoising layers; one or per layer.")
    corruption: str = opt("masking", "Corruption of denoising layers.", choices=CORRUPTIONS)
    sparsity_target: float = opt(0.05, "Target mean activation rho of sparse layers.")
    sparsity_weight: float = opt(1.0, "Weight beta of the sparsity penalty.")
    sparsity_penalty: str = opt("kl", "Sparsity penalty of sparse layers.", choices=("kl", "l1"))
    contraction: float = opt(0.1, "Weight lambda of the contractive penalty.")
    cd_k: int = opt(1, "Gibbs steps k of contrastive divergence for RBM layers.")
    pretrain_epochs: tuple[int, ...] = opt((2,), "Pretraining epochs per layer; one or per layer "
                                           "(2 keeps the default grid short; --preset full: 10).")
    pretrain_lr: tuple[float, ...] = opt((1e-3,), "Pretraining learning rate; one or per layer.")
    pretrain_optimizer: str = opt("adam", "Pretraining optimizer.", choices=OPTIMIZERS)
    pretrain_batch_size: int = opt(256, "Pretraining minibatch size.")
    finetune_epochs: int = opt(10, "Fine-tuning epochs (10 keeps the default grid short; "
                               "--preset full: 30).")
    finetune_lr: float = opt(0.1, "Fine-tuning learning rate.")
    finetune_lr_schedule: str = opt("constant", "Fine-tuning learning rate over the run: constant, "
                                    "or cosine decay to 0.", choices=LR_SCHEDULES)
    finetune_optimizer: str = opt("sgd", "Fine-tuning optimizer.", choices=OPTIMIZERS)
    momentum: float = opt(0.9, "Momentum of SGD (and of RBM updates).")
    weight_decay: float = opt(0.0, "L2 weight decay of pretraining and fine-tuning.")
    finetune_batch_size: int = opt(128, "Fine-tuning minibatch size.")
    min_epoch_examples: int = opt(10000, "A fine-tuning epoch repeats the labelled set until it has "
                                  "seen at least this many examples.")
    dropout: float = opt(0.0, "Dropout probability on hidden layers during fine-tuning.")
    patience: int = opt(0, "Stop fine-tuning after this many epochs without a better validation "
                        "error (0 = run every epoch).")
    precision: str = opt("float32", "Compute precision: bfloat16 autocasts matmuls.",
                         choices=("float32", "bfloat16"))
    seed_batch: int = opt(1, "Fine-tune this many seeds of one arm at once with torch.vmap "
                          "(1 = off); worthwhile on a GPU. Results match separate runs to float "
                          "rounding, except dropout masks.")

    def __post_init__(self):
        check(self.seed_batch >= 1, "seed_batch", f"must be >= 1, got {self.seed_batch}")
        for name in ("inits", "seeds", "labels", "depths"):
            v = getattr(self, name)
            check(len(v) > 0, name, "needs at least one value")
            check(len(set(v)) == len(v), name, f"has a repeated value: {', '.join(map(str, v))}")
        for b in self.labels:
            check(b == "all" or (b.isdigit() and int(b) > 0 and str(int(b)) == b), "labels",
                   f"budgets must be positive integers or 'all', got {b!r}")
        for d in self.depths:
            check(0 <= d <= len(self.layers), "depths",
                   f"must be between 1 and the {len(self.layers)} layers of --layers (0 = all), "
                   f"got {d}")
        check(len(set(self.depth_list)) == len(self.depth_list), "depths",
               "names the same depth twice (0 means all layers)")
        n = len(self.layers)
        for name in ("noise", "pretrain_epochs", "pretrain_lr"):
            v = getattr(self, name)
            check(len(v) in (1, n), name, f"needs one value or one per layer ({n}), got {len(v)}")
        # every cell's settings must be valid; a failure is reported under this config's name
        depth, seed = max(self.depth_list), self.seeds[0]
        for init in self.inits:
            if init in OBJECTIVES:
                _renamed(lambda: self.pretrain_config(init, seed, depth),
                         {**{v: k for k, v in ABLATE_TO_PRETRAIN.items()}, "objective": "inits"})
            _renamed(lambda: self.finetune_config(init, seed, depth, self.labels[0], None),
                     {v: k for k, v in ABLATE_TO_FINETUNE.items()})

    @property
    def depth_list(self) -> tuple[int, ...]:
        """The depths as numbers of hidden layers (0 resolved to all of --layers)."""
        return tuple(d or len(self.layers) for d in self.depths)

    def _sliced(self, name: str, depth: int) -> tuple:
        v = getattr(self, name)
        return v if len(v) == 1 else v[:depth]

    def pretrain_config(self, objective: str, seed: int, depth: int) -> PretrainConfig:
        """The pretraining run of one (objective, seed, depth): shared by every budget."""
        return PretrainConfig(
            dataset=self.dataset, data=self.data, train_size=self.train_size,
            val_size=self.val_size, seed=seed, device=self.device, layers=self.layers[:depth],
            activation=self.activation, objective=(objective,), tied=self.tied,
            noise=self._sliced("noise", depth), corruption=self.corruption,
            sparsity_target=self.sparsity_target, sparsity_weight=self.sparsity_weight,
            sparsity_penalty=self.sparsity_penalty, contraction=self.contraction, cd_k=self.cd_k,
            epochs=self._sliced("pretrain_epochs", depth), lr=self._sliced("pretrain_lr", depth),
            optimizer=self.pretrain_optimizer, momentum=self.momentum,
            weight_decay=self.weight_decay, batch_size=self.pretrain_batch_size,
            precision=self.precision)

    def finetune_config(self, init: str, seed: int, depth: int, budget: str,
                        stack: Optional[str]) -> FinetuneConfig:
        """One cell's fine-tuning: from `stack` for a pretrained arm, else the named random scheme
        on the same widths and activation."""
        return FinetuneConfig(
            dataset=self.dataset, data=self.data, train_size=self.train_size,
            val_size=self.val_size, seed=seed, device=self.device,
            init=stack if init in OBJECTIVES and stack else "random",
            init_scheme=RANDOM_INITS.get(init, "default"), layers=self.layers[:depth],
            activation=self.activation, labels=budget, epochs=self.finetune_epochs,
            lr=self.finetune_lr, lr_schedule=self.finetune_lr_schedule,
            optimizer=self.finetune_optimizer, momentum=self.momentum,
            weight_decay=self.weight_decay, batch_size=self.finetune_batch_size,
            min_epoch_examples=self.min_epoch_examples, dropout=self.dropout,
            patience=self.patience, precision=self.precision)


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
