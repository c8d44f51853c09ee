"""Preflight checks: what a run needs, checked before its folder is created, so a mistake leaves
nothing behind. The data fit the options (sizes, label budgets), the network fits in memory, and
every checkpoint a run would reuse (a stack to fine-tune, finished layers to resume, the stacks an
ablation folder already holds) was made with the settings the run states.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_stack, read
from .autoencoders import ACT
from .config import RUN_ONLY, PretrainConfig, to_dict
from .config_grid import AblateConfig
from .data import OptionError, check_budget, check_sizes, read_arrays
from .runlog import finished_layers

NOT_COMPARED = ("device", *RUN_ONLY)  # where and how a stack ran does not change what it is


# ---- data and memory ---------------------------------------------------------------------------

def data_sizes(cfg, budgets=(), known: dict | None = None) -> dict:
    """Training/validation/test counts, input width and classes, with the size options and label
    `budgets` checked against them in the order they apply (so a --val-size larger than the data
    is named as such, not as a label budget it leaves no room for); `known` (dataset -> counts)
    avoids loading a dataset."""
    if known is not None and not cfg.data and cfg.dataset in known:
        total, n_test, width, classes = known[cfg.dataset]
        name = cfg.dataset
    else:
        (xtr, ytr, xte, yte), name = read_arrays(cfg)
        total, n_test, width = len(xtr), len(xte), xtr.shape[1]
        classes = int(max(ytr.max(), yte.max())) + 1
    n_val, n_train = check_sizes(cfg.val_size, cfg.train_size, total, name)
    for b in budgets:
        check_budget(None if str(b).lower() == "all" else int(b), n_train, classes)
    return {"train": n_train, "val": n_val, "test": n_test, "input_dim": width,
            "classes": classes}


def fitted_budgets(cfg: AblateConfig, sizes: dict, say=None) -> AblateConfig:
    """The default label budgets (MNIST's) without those larger than a small data set, saying so;
    budgets a user chose are checked as they are (data_sizes)."""
    if cfg.labels != AblateConfig().labels:
        return cfg
    large = [b for b in cfg.labels if b != "all" and int(b) > sizes["train"]]
    if not large:
        return cfg
    keep = tuple(b for b in cfg.labels if b not in large)
    if say:
        say(f"label budgets {', '.join(large)} dropped: the data have {sizes['train']:,} training "
            f"images (budgets {', '.join(keep)} kept)")
    return dataclasses.replace(cfg, labels=keep)


def available_memory(device: torch.device) -> int | None:
    """Bytes free on the device (MemAvailable for the CPU), None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(widths, input_dim: int, n_classes: int, n_examples: int, device) -> None:
    """Refuse a network that cannot fit before anything is written. A lower bound: each weight
    with its gradient and one optimizer state, and one layer's codes of every example."""
    shape = [input_dim, *widths, n_classes]
    weights = sum(a * b for a, b in zip(shape, shape[1:]))
    need = 4 * (3 * weights + n_examples * max(widths, default=0))
    free = available_memory(torch.device(device))
    if free is not None and need > free:
        raise OptionError("--layers", f"a {'-'.join(map(str, shape[:-1]))} network needs at "
                          f"least {gib(need)} of memory to train, more than the {gib(free)} "
                          f"free on {device}; use smaller widths")


def gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


# ---- checkpoints a run reuses ------------------------------------------------------------------

def check_stack(path, input_dim: int | None = None) -> dict:
    """A stack checkpoint that can be fine-tuned: known activations, finite weights."""
    ck = load_stack(path, input_dim)
    for i, layer in enumerate(ck["layers"], 1):
        if layer.get("activation") not in ACT:
            raise CheckpointError(f"{path}: layer {i} has activation {layer.get('activation')!r}, "
                                  f"expected one of {', '.join(ACT)}")
        if not (torch.isfinite(layer["weight"]).all() and torch.isfinite(layer["bias"]).all()):
            raise CheckpointError(f"{path}: layer {i} weights hold NaN or Inf values, so the "
                                  f"stack is unusable; pretrain it again")
    return ck


def mismatch(saved: dict, cfg: PretrainConfig, upto: int | None = None):
    """The first setting in which a checkpoint's recorded config differs from `cfg`, as (name,
    recorded, wanted); with `upto`, per-layer settings are compared for the first `upto` layers
    only (what a finished layer depended on)."""
    want, default = to_dict(cfg), to_dict(PretrainConfig())
    for f in dataclasses.fields(PretrainConfig):  # a setting newer than the checkpoint: default
        name, have, need = f.name, saved.get(f.name, default[f.name]), want[f.name]
        if name in NOT_COMPARED:
            continue
        if upto is not None and (f.metadata.get("per_layer") or name == "layers"):
            have = [per_layer(have, k) for k in range(upto)] if isinstance(have, list) else have
            need = [per_layer(need, k) for k in range(upto)]
        if have != need:
            return name, have, need
    return None


def per_layer(values: list, k: int):
    return values[k] if len(values) > 1 else values[0]


def shown(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def check_layers(folder: Path, cfg: PretrainConfig, whose: str = "this run") -> None:
    """The finished layers a resumed pretraining would reload: consecutive from layer 1, and each
    trained with this run's seed and the settings of the layers up to it."""
    done = sorted(k for k in finished_layers(folder) if k <= len(cfg.layers))
    if done != list(range(1, len(done) + 1)):
        raise CheckpointError(f"{folder} has layer{done[-1]}.pt but not every layer below it; "
                              f"a resumed stack is built from layer 1 up")
    for k in done:
        path = Path(folder) / f"layer{k}.pt"
        saved = read(path).get("config")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path} records no config, so it cannot be checked; remove it")
        diff = mismatch(saved, cfg, upto=k)
        if diff:
            name, have, need = diff
            raise CheckpointError(f"{path} was trained with --{name.replace('_', '-')} "
                                  f"{shown(have)}, but {whose} has {shown(need)}; a resumed stack "
                                  f"must come from one run: remove {path.name} and the layers "
                                  f"above it, or resume with the same --{name.replace('_', '-')}")


def check_grid_stacks(out: Path, cfg, cells, per_arm: dict | None = None) -> None:
    """The stacks (and finished layers) an ablation folder already holds for these cells must be
    the ones its grid would pretrain: same widths, seed and settings (an arm's own `per_arm`
    settings where a tuning chose them)."""
    from .space import applied
    seen = set()
    for c in cells:
        if not c.pretrain or c.pretrain in seen:
            continue
        seen.add(c.pretrain)
        folder = Path(out) / "runs" / "pretrain" / c.pretrain
        own = dataclasses.replace(cfg, **applied((per_arm or {}).get(c.init, {})))
        want = own.pretrain_config(c.init, c.seed, c.depth)
        stack = folder / "stack.pt"
        if stack.exists():
            diff = mismatch(check_stack(stack).get("config") or {}, want)
            if diff:
                name, have, need = diff
                raise CheckpointError(f"{stack} was pretrained with --{name.replace('_', '-')} "
                                      f"{shown(have)}, but this grid's cell {c.id} needs "
                                      f"{shown(need)}; it is not this grid's stack: move it away "
                                      f"or choose another --out")
        elif folder.exists():
            check_layers(folder, want, whose=f"this grid's cell {c.id}")


def stacks_source(stacks_from: str | None) -> Path | None:
    """The folder of stacks --stacks-from names: a grid's runs/pretrain, or that folder itself."""
    if not stacks_from:
        return None
    grid = Path(stacks_from) / "runs" / "pretrain"
    return grid if grid.is_dir() else Path(stacks_from)


def matching_stack(folder: Path, want) -> Path | None:
    """`folder` when it holds a finished stack pretrained with the settings `want` (a
    PretrainConfig, compared as a grid's own stacks are, by mismatch), else None."""
    try:
        saved = read(folder / "stack.pt").get("config") if (folder / "stack.pt").exists() else None
    except CheckpointError:
        return None
    return folder if isinstance(saved, dict) and mismatch(saved, want) is None else None


def check_stacks_from(path: str) -> None:
    """--stacks-from names a grid folder (whose stacks may be none yet, as in a fresh clone of
    committed results without their checkpoints) or a folder of finished stacks."""
    source = stacks_source(path)
    if not Path(path).is_dir():
        raise OptionError("--stacks-from", f"{path} is not a folder; expected a `stackae ablate` "
                          f"or `stackae tune` folder")
    if source.name != "pretrain" and not any((d / "stack.pt").exists()
                                             for d in source.iterdir()):
        raise OptionError("--stacks-from", f"{path} holds no finished stacks; expected a "
                          f"`stackae ablate` or `stackae tune` folder (its runs/pretrain/"
                          f"<objective>-d<D>-s<S>/stack.pt)")


# ---- resuming pretraining with new settings for the layers not yet trained ---------------------

def refused_change(saved: PretrainConfig, name: str, value, finished: int) -> str | None:
    """Why setting `name` may not become `value` on --resume, None when it may: after a divergence
    the layers not yet trained may get, say, a smaller learning rate; finished layers keep theirs."""
    f = {f.name: f for f in dataclasses.fields(PretrainConfig)}[name]
    old = to_dict(saved)[name]
    if not f.metadata.get("per_layer") or finished >= len(saved.layers):
        return f"differs from the run being resumed ({shown(old)})"
    new = list(value)
    for k in range(finished):
        if per_layer(new, k) != per_layer(old, k):
            keep = [per_layer(old, j) for j in range(finished)]
            rest = [per_layer(new, j) for j in range(finished, len(saved.layers))]
            return (f"layer {k + 1} is finished with {per_layer(old, k)}; only the layers not yet "
                    f"trained may change, e.g. --{name.replace('_', '-')} {shown(keep + rest)}")
    return None


def finished_count(folder: Path, n_layers: int) -> int:
    """How many layers, from the bottom, a resumed pretraining reloads."""
    if (Path(folder) / "stack.pt").exists():
        return n_layers
    done = finished_layers(folder)
    return next(k for k in range(n_layers + 1) if k + 1 not in done)
