"""The ablation grid's settings: AblateConfig, a sweep over PretrainConfig's and FinetuneConfig's
fields (config.py), derived from them so that a new setting of either reaches every cell of a
grid, with the grid's own settings (arms, seeds, label budgets, depths) and presets.

A stage's setting X is the grid's `<stage>_X` where both stages have an X (PREFIXED), else X;
`pretrain_config` and `finetune_config` give one cell's settings of each stage.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Optional

from .config import OBJECTIVES, FinetuneConfig, PretrainConfig
from .schema import ConfigError, check, field_types, opt

# Random-init arms of an ablation and the FinetuneConfig.init_scheme each one means.
RANDOM_INITS = {"random": "default", "xavier": "xavier", "kaiming": "kaiming", "uniform": "uniform"}
ABLATE_INITS = OBJECTIVES + tuple(RANDOM_INITS)

# --preset NAME: values that replace AblateConfig's defaults (flags and --config still win).
ABLATE_PRESETS = {
    "default": {},
    "full": {"layers": (1000, 1000, 500), "seeds": tuple(range(10)),
             "labels": ("100", "1000", "10000", "all"), "inits": ("denoising", "xavier"),
             "pretrain_epochs": (10,), "finetune_epochs": 30},
}

# How a grid's settings map onto each cell's: a stage's setting X is the grid's `<stage>_X` when
# both stages have an X of their own, else the grid's X (shared by both stages, or the one stage's).
PREFIXED = {"pretrain": ("epochs", "lr", "optimizer", "momentum", "weight_decay", "batch_size"),
            "finetune": ("epochs", "lr", "lr_schedule", "optimizer", "momentum", "weight_decay",
                         "batch_size")}
# grid settings that both stages shared before each stage had its own (grids saved before 0.2)
RENAMED = {"momentum": ("pretrain_momentum", "finetune_momentum"),
           "weight_decay": ("pretrain_weight_decay", "finetune_weight_decay")}
PER_CELL = ("seed", "objective", "init", "init_scheme", "like", "labels")  # set by the cell
NOT_SWEPT = ("loss", "persistent", "rbm_visible", "unroll_epochs", "linear_code",  # defaults
             "freeze_encoder",
             "read_test")  # a grid reports every test error; tune's trials turn it off
STAGES = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}


def grid_name(stage: str, name: str) -> str:
    return f"{stage}_{name}" if name in PREFIXED[stage] else name


class _Grid:
    """Methods of AblateConfig (its fields are derived below)."""

    @staticmethod
    def migrate(settings: dict) -> dict:
        """Settings named as an older grid named them: a setting both stages shared (RENAMED)
        becomes each stage's own, unless that is given too."""
        out = {k: v for k, v in settings.items() if k not in RENAMED}
        for old, new in RENAMED.items():
            if old in settings:
                for name in new:
                    out.setdefault(name, settings[old])
        return out

    def __post_init__(self):
        check(self.seed_batch >= 0, "seed_batch", f"must be >= 0, got {self.seed_batch}")
        for name in ("inits", "seeds", "labels", "depths"):
            v = getattr(self, name)
            check(len(v) > 0, name, "needs at least one value")
            check(len(set(v)) == len(v), name, f"has a repeated value: {', '.join(map(str, v))}")
        check(all(s >= 0 for s in self.seeds), "seeds",
              f"must be >= 0, got {', '.join(map(str, self.seeds))}")
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
        for stage, cls in STAGES.items():
            for f in dataclasses.fields(cls):
                name = grid_name(stage, f.name)
                if f.metadata.get("per_layer") and hasattr(self, name):
                    v = getattr(self, name)
                    check(len(v) in (1, n), name,
                          f"needs one value or one per layer ({n}), got {len(v)}")
        # every cell's settings must be valid; a failure is reported under the grid's name
        depth, seed = max(self.depth_list), self.seeds[0]
        for init in self.inits:
            if init in OBJECTIVES:
                self._checked("pretrain", lambda: self.pretrain_config(init, seed, depth),
                              objective="inits")
            self._checked("finetune",
                          lambda: self.finetune_config(init, seed, depth, self.labels[0], None))

    @staticmethod
    def _checked(stage: str, build, **names):
        try:
            build()
        except ConfigError as e:
            raise ConfigError(names.get(e.name) or grid_name(stage, e.name), e.message)

    @property
    def depth_list(self) -> tuple[int, ...]:
        """The depths as numbers of hidden layers (0 resolved to all of --layers)."""
        return tuple(d or len(self.layers) for d in self.depths)

    def _project(self, stage: str, depth: int) -> dict:
        """The grid's settings of one stage under that stage's names, per-layer ones cut to depth."""
        out = {}
        for f in dataclasses.fields(STAGES[stage]):
            name = grid_name(stage, f.name)
            if f.name in PER_CELL or f.name in NOT_SWEPT or name not in self._fields():
                continue
            v = getattr(self, name)
            if f.name == "layers" or (f.metadata.get("per_layer") and len(v) > 1):
                v = v[:depth]
            out[f.name] = v
        return out

    @classmethod
    def _fields(cls) -> set:
        return {f.name for f in dataclasses.fields(cls)}

    def pretrain_config(self, objective: str, seed: int, depth: int) -> PretrainConfig:
        """The pretraining run of one (objective, seed, depth): shared by every budget."""
        return PretrainConfig(**self._project("pretrain", depth), seed=seed,
                              objective=(objective,))

    def finetune_config(self, init: str, seed: int, depth: int, budget: str,
                        stack: Optional[str]) -> FinetuneConfig:
        """One cell's fine-tuning: from `stack` for a pretrained arm, else the named random scheme
        on the same widths and activation."""
        return FinetuneConfig(**self._project("finetune", depth), seed=seed,
                              init=stack if init in OBJECTIVES and stack else "random",
                              init_scheme=RANDOM_INITS.get(init, "default"), labels=budget)


# Defaults (and their help) where a grid differs from a single run.
GRID_DEFAULTS = {
    "layers": ((256, 256), "Hidden widths, bottom to top. Smaller than pretrain's 1000,1000,500 so "
               "that the default grid runs in about 5 minutes on 2 CPU cores; --preset full uses "
               "1000,1000,500."),
    "pretrain_epochs": ((2,), "Pretraining epochs per layer; one or per layer (2 keeps the default "
                        "grid short; --preset full: 10)."),
    "finetune_epochs": (10, "Fine-tuning epochs (10 keeps the default grid short; --preset full: "
                        "30)."),
}
GRID_OWN = [
    ("inits", tuple[str, ...], opt(("denoising", "xavier"), "Arms to compare: pretraining "
                                   "objectives (plain, denoising, sparse, contractive, rbm) and "
                                   "random-init schemes (xavier = Glorot, the fair baseline for "
                                   "sigmoid and tanh; kaiming = He, for relu; random = torch's "
                                   "default, which leaves a sigmoid network on a plateau; uniform).",
                                   choices=ABLATE_INITS)),
    ("seeds", tuple[int, ...], opt(tuple(range(8)), "Seeds (8 is the fewest with which the "
                                   "Wilcoxon test can reach p < 0.05 after Holm's correction "
                                   "across 4 label budgets). One seed gives every arm the same "
                                   "validation split, labelled subset, head and batch order (a "
                                   "paired design).")),
    ("labels", tuple[str, ...], opt(("100", "1000", "10000", "all"), "Label budgets: numbers of "
                                    "labelled training images (seeded, class-balanced), or "
                                    "'all'.")),
    ("depths", tuple[int, ...], opt((0,), "Network depths to compare: the first d widths of "
                                    "--layers; 0 = all of them.")),
]
GRID_LAST = [
    ("seed_batch", int, opt(0, "Most networks to train at once in one loop: the seeds of an "
                            "objective's pretraining, the arms and seeds of a label budget's "
                            "fine-tuning (0 = as many as fit: all of them on a GPU; on a CPU at "
                            "most 8, fewer for wide layers). "
                            "Results are the same however they are batched.")),
    ("stacks_from", Optional[str], opt(None, "A `stackae ablate` or `stackae tune` folder (or "
                                       "its runs/pretrain) whose finished stacks this grid "
                                       "copies instead of pretraining them again: each stack "
                                       "whose objective, depth, seed and pretraining settings "
                                       "are the ones a cell needs (checked); any other is "
                                       "pretrained here.", path=True)),
]
STAGE_WORDS = {"pretrain": "Pretraining", "finetune": "Fine-tuning"}


def _grid_fields() -> list:
    fields, seen = list(GRID_OWN), {name for name, _, _ in GRID_OWN}
    for stage, cls in STAGES.items():
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            name = grid_name(stage, f.name)
            if f.name in PER_CELL or f.name in NOT_SWEPT or name in seen:
                continue
            seen.add(name)
            meta, default = dict(f.metadata), f.default
            if name != f.name:
                meta["help"] = f"{STAGE_WORDS[stage]}: {meta['help'][0].lower()}{meta['help'][1:]}"
            if name in GRID_DEFAULTS:
                default, meta["help"] = GRID_DEFAULTS[name]
            fields.append((name, types[f.name], field(default=default, metadata=meta)))
    return fields + GRID_LAST


AblateConfig = dataclasses.make_dataclass("AblateConfig", _grid_fields(), bases=(_Grid,),
                                          frozen=True)
AblateConfig.__module__ = __name__
AblateConfig.__doc__ = ("An ablation grid: inits x seeds x label budgets x depths, with the "
                        "settings of both stages (derived from PretrainConfig and FinetuneConfig).")
