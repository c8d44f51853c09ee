"""What every entry point resolves before a run starts: its settings (defaults, a config, keyword
settings, or a resumed folder's), where its data come from, its folder, and for a grid the cells
and data sizes — each checked before anything is written. api.py's functions are built on these.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import checks, claims
from . import data as data_mod
from .config import DATASETS, RUN_ONLY, ConfigError, FinetuneConfig, PretrainConfig
from .config import PROVENANCE_KEYS, field_types, from_dict, load_json, to_dict
from .config_grid import AblateConfig
from .files import NAMES
from .progress import say
from .runlog import RunError
from .schema import coerce, did_you_mean

ARRAYS = "(arrays in memory)"  # what config.json says when the data came as arrays
COMMANDS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "ablate": AblateConfig}


def named_settings(cls, config, settings: dict) -> dict:
    """The settings a call names: `config` (object, dict or JSON file), then keyword settings."""
    if config is None:
        base = {}
    elif isinstance(config, cls):
        base = to_dict(config)
    elif isinstance(config, dict):
        base = dict(config)
    elif isinstance(config, (str, Path)):
        base = load_json(config)
    else:
        raise TypeError(f"config must be a {cls.__name__}, a dict or a JSON file, got "
                        f"{type(config).__name__}")
    settings = {k: (tuple(v) if isinstance(v, range) else v) for k, v in settings.items()}
    if hasattr(cls, "migrate"):  # names an older version used
        base, settings = cls.migrate(base), cls.migrate(settings)
    return {k: v for k, v in {**base, **settings}.items() if k not in PROVENANCE_KEYS}


def four_arrays(source) -> tuple | None:
    """The four arrays when `source` is (x_train, y_train, x_test, y_test) or a dict of them."""
    if isinstance(source, dict):
        missing = [k for k in NAMES if k not in source]
        if missing:
            raise data_mod.DataError(f"data lacks {', '.join(missing)} (expected x_train, y_train, "
                                     "x_test, y_test)")
        return tuple(source[k] for k in NAMES)
    if isinstance(source, (tuple, list)):
        if len(source) != 4:
            raise data_mod.DataError(f"data must be (x_train, y_train, x_test, y_test), got "
                                     f"{len(source)} items")
        return tuple(source)
    return None


def data_source(source) -> tuple[dict, object]:
    """The settings naming where the data come from, and the data when they are already in
    memory (arrays, or a Data from load_data)."""
    if source is None:
        return {}, None
    if isinstance(source, data_mod.Data):
        return {"data": ARRAYS}, source
    if (arrays := four_arrays(source)) is not None:
        return {"data": ARRAYS}, arrays
    if isinstance(source, str) and source in DATASETS:
        return {"dataset": source, "data": None}, None
    if isinstance(source, (str, Path)):
        if not Path(source).exists():
            raise data_mod.DataError(f"data {str(source)!r} is neither a known dataset nor an "
                                     f"existing path{did_you_mean(source, DATASETS)}")
        return {"data": str(source)}, None
    raise TypeError("data must be a dataset name, a path, (x_train, y_train, x_test, y_test) or a "
                    f"stackae.Data, got {type(source).__name__}")


def load_for(cfg, device, held):
    """The run's Data: as given, from arrays split by the config's seed, or from the config."""
    if isinstance(held, data_mod.Data):
        return held
    if held is not None:
        return data_mod.from_arrays(*held, val_size=cfg.val_size, train_size=cfg.train_size,
                                    seed=cfg.seed, device=device)
    if cfg.data == ARRAYS:
        raise data_mod.DataError("this run's data were arrays in memory; pass them again as data=")
    return data_mod.load(cfg, device)


def run_folder(kind: str, out, resume: bool) -> tuple[Path, bool]:
    """The run folder (default runs/<kind>/<date-time>, made unique) and whether it resumes; an
    existing folder without `resume` is refused."""
    if out is None and resume:
        raise ConfigError("out", "names the run folder to continue (resume=True, or a shard of "
                                 "a grid); none was given")
    if out is None:
        base = Path("runs") / kind / time.strftime("%Y%m%d-%H%M%S")
        out, n = base, 1
        while out.exists():
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    out = Path(out)
    try:
        from .runlog import prepare_folder
        return out, prepare_folder(out, resume)
    except claims.ClaimError:
        raise
    except RunError as e:
        raise claims.ClaimError(str(e))


def saved_config(cls, out: Path):
    """The settings in a run folder's config.json; another command's folder is refused naming
    that command, a damaged config.json as damaged."""
    path = out / "config.json"
    try:
        settings = {k: v for k, v in load_json(path).items() if k not in PROVENANCE_KEYS}
    except ConfigError as e:
        raise RunError(f"cannot resume: {e.message}")
    try:
        return from_dict(cls, settings)
    except ConfigError as e:
        for command, other in COMMANDS.items():
            if other is not cls and parses(other, settings):
                raise claims.ClaimError(f"{out} holds a `stackae {command}` run; resume it with "
                                        f"stackae {command} --out {out} --resume")
        raise RunError(f"cannot resume: {path} is damaged ({e})")


def parses(cls, settings: dict) -> bool:
    try:
        from_dict(cls, settings)
    except ConfigError:
        return False
    return True


def config_for(cls, given: dict, out: Path | None = None):
    """The run's config: defaults and the given settings for a new run; for a resumed one (`out`)
    the folder's, which the given settings must agree with, except that a pretraining may change
    per-layer settings of the layers it has not finished (after a divergence, say)."""
    if out is None:
        return from_dict(cls, given)
    saved = saved_config(cls, out)
    finished = checks.finished_count(out, len(saved.layers)) if cls is PretrainConfig else 0
    types, changes = field_types(cls), {}
    for name, value in given.items():
        if name not in types:
            from_dict(cls, {name: value})  # an unknown setting, named with the nearest known ones
        value = coerce(name, types[name], value)
        if value == getattr(saved, name):
            continue
        if name in RUN_ONLY:
            changes[name] = value
            continue
        why = (checks.refused_change(saved, name, value, finished) if cls is PretrainConfig
               else f"differs from the run being resumed "
                    f"({checks.shown(to_dict(saved)[name])})")
        if why:
            raise ConfigError(name, f"{why} in {out / 'config.json'}")
        changes[name] = value
    return from_dict(cls, {**to_dict(saved), **changes})


def prepare_run(cls, kind: str, data, config, settings: dict, out, resume: bool):
    """(config, data held in memory, folder, resuming) of a pretrain or finetune call."""
    given = named_settings(cls, config, settings)
    where, held = data_source(data)
    if isinstance(held, data_mod.Data):  # already split: its sizes are what the run records
        n_val = len(held.val_x)
        for name in ("train_size", "val_size"):
            if given.get(name) is not None and not (name == "val_size" and given[name] == n_val):
                raise ConfigError(name, f"cannot apply to a Data, whose split is already drawn "
                                  f"({len(held.train_x)} training, {n_val} validation images); "
                                  f"give it to stackae.load_data, or pass the arrays or path as "
                                  f"data")
        where = {**where, "val_size": n_val}
    out, resuming = run_folder(kind, out, resume)
    cfg = config_for(cls, {**given, **where}, out if resuming else None)
    return cfg, held, out, resuming


def device_of(cfg) -> torch.device:
    from .train import resolve_device
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        raise ConfigError("device", str(e))
    if cfg.precision == "tf32" and device.type != "cuda":
        raise ConfigError("precision", f"tf32 is a CUDA tensor-core format, and this run is on "
                                       f"the {device.type}; use float32 or bfloat16 there")
    return device


@dataclasses.dataclass
class Grid:
    """An ablation about to start: its settings, folder, cells and data sizes."""
    cfg: AblateConfig
    out: Path
    resuming: bool
    cells: list
    mine: list
    sizes: dict
    device: object
    arrays: tuple | None  # the user's arrays, saved as <out>/data.npz when the grid starts


def prepare_grid(data, config, settings: dict, out, resume: bool, shard, quiet: bool,
          local: bool = True, dry_run: bool = False, kind: str = "ablate") -> Grid:
    """Settings, data sizes, budgets and cells of a grid, checked before its folder exists
    (default runs/<kind>/<date-time>: ablate, or tune for a tuned grid). A `local` grid loads its
    data here; a dry run or a grid for SLURM counts known datasets without loading them, and
    leaves the device to the nodes."""
    from . import grid as G
    from .grid import expand, parse_shard, shard as shard_of
    if shard is not None:  # (i, n) or "i/n", 1 <= i <= n
        try:
            shard = parse_shard(shard if isinstance(shard, str) else "/".join(map(str, shard)))
        except (TypeError, ValueError):
            raise ConfigError("shard", f"expected (i, n) or 'i/n' with 1 <= i <= n, got {shard!r}")
    given = named_settings(AblateConfig, config, settings)
    if isinstance(data, data_mod.Data):
        raise TypeError("run_ablation needs the data's arrays or a path (each seed draws its own "
                        "validation split), not a Data")
    held = four_arrays(data)
    if held is None:
        where, _ = data_source(data)
    else:
        held = data_mod.checked_arrays(*(a.detach().cpu().numpy() if isinstance(a, torch.Tensor)
                                         else np.asarray(a) for a in held),
                                       where=("x_train/y_train", "x_test/y_test"))
    # a shard joins a grid that other shards may have started, with the same settings
    out, exists = run_folder(kind, out, resume or shard is not None)
    if kind == "ablate" and (out / "tune.json").exists():  # its cells run with tuned settings
        raise claims.ClaimError(f"{out} holds a `stackae tune` run; resume it with stackae "
                                f"tune --out {out} --resume")
    resuming = exists and resume
    if held is not None:
        saved = out / "data.npz"
        where = {} if resuming and saved.exists() else {"data": str(saved)}
        if saved.exists():  # a resumed or joined grid keeps the arrays it started with
            with np.load(saved) as have:
                if not all(np.array_equal(have[k], a) for k, a in zip(NAMES, held)):
                    raise data_mod.DataError(f"the arrays given are not those {out} was started "
                                             f"with ({saved}); resume with the same arrays, or "
                                             f"use another folder")
    cfg = config_for(AblateConfig, {**given, **where}, out if resuming else None)
    if cfg.stacks_from:
        checks.check_stacks_from(cfg.stacks_from)
    device = device_of(cfg) if local else cfg.device
    known = G.DATASET_SIZES if dry_run or not local else None
    with tempfile.TemporaryDirectory() as tmp:
        sized = cfg
        if held is not None and not (out / "data.npz").exists():
            np.savez(Path(tmp) / "data.npz", **dict(zip(NAMES, held)))
            sized = dataclasses.replace(cfg, data=str(Path(tmp) / "data.npz"))
        if not resuming:  # MNIST's default budgets on small data
            cfg = checks.fitted_budgets(cfg, checks.data_sizes(sized, (), known=known),
                                        None if quiet else say)
            sized = dataclasses.replace(sized, labels=cfg.labels)
        sizes = checks.data_sizes(sized, cfg.labels, known=known)
    if local:
        checks.check_memory(cfg.layers, sizes["input_dim"], sizes["classes"],
                            sizes["train"] + sizes["val"], device)
    cells = expand(cfg)
    mine = shard_of(cells, *shard) if shard else cells
    return Grid(cfg, out, resuming, cells, mine, sizes, device, held)


def start_grid(g: Grid, per_arm: dict | None = None) -> None:
    """Check the stacks the folder already holds (a tuning's pretrained arms may have their own
    pretraining settings, `per_arm`), then create or join it (config.json, grid.json, and the
    user's arrays as data.npz)."""
    from . import grid as G
    from .runlog import write_json
    if g.out.exists():
        checks.check_grid_stacks(g.out, g.cfg, g.mine, per_arm)

    def write_plan():
        write_json(g.out / "grid.json", G.plan(g.cfg, g.out, g.cells, g.sizes))
        if g.arrays is not None and not (g.out / "data.npz").exists():
            with tempfile.TemporaryDirectory(dir=g.out) as tmp:
                np.savez(Path(tmp) / "data.npz", **dict(zip(NAMES, g.arrays)))
                shutil.move(Path(tmp) / "data.npz", g.out / "data.npz")
    claims.join_grid(g.out, to_dict(g.cfg), g.device, g.resuming, write_plan)
