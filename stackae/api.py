"""The Python API, for notebooks and scripts; the `stackae` commands are a thin layer over it.

    import stackae
    stack = stackae.pretrain_stack((x_train, y_train, x_test, y_test), layers=(256, 128), epochs=2)
    encoder = stack.encoder                        # torch.nn.Sequential, pretrained
    run = stackae.finetune_classifier(stack, data=(x_train, y_train, x_test, y_test), labels=1000)
    grid = stackae.run_ablation(labels=("100", "all"), seeds=(0, 1, 2))
    grid.dataframe()                               # one row per cell (pandas)

Settings come from a config (a config object, a dict or a JSON file such as a run's config.json)
and keyword arguments, which win; their names and defaults are the command line's. Data is a
dataset name, a path to your files, or arrays/tensors (x_train, y_train, x_test, y_test). Every
call writes a normal run folder (default runs/<command>/<date-time>).

Each call checks everything before its folder exists (the data fit the settings, the network fits
in memory, a stack or resumed layers were made with these settings), claims the folder for this
process, and on `resume=True` takes the folder's settings: those given now must agree, except that a
pretraining may change per-layer settings of the layers it has not finished.
"""
from __future__ import annotations

import dataclasses
import shlex
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, checks, claims
from . import data as data_mod
from .artifacts import Ablation, Classifier, Stack, load_ablation, load_model, load_stack
from .config import DATASETS, AblateConfig, ConfigError, FinetuneConfig, PretrainConfig
from .config import field_types, from_dict, load_json, to_dict
from .progress import Progress, say
from .runlog import RunError
from .schema import coerce, did_you_mean

__all__ = ["pretrain_stack", "finetune_classifier", "run_ablation", "plan_ablation", "run_tuning",
           "load_data",
           "load_stack", "load_model", "load_ablation", "Stack", "Classifier", "Ablation"]

ARRAYS = "(arrays in memory)"  # what config.json says when the data came as arrays
NAMES = ("x_train", "y_train", "x_test", "y_test")
PROVENANCE_KEYS = ("provenance", "resumed")  # what a config.json holds beside the settings
COMMANDS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "ablate": AblateConfig}


# ---- settings, data and folders, shared by every entry point -------------------------------

def _given(cls, config, settings: dict) -> dict:
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
    return {k: v for k, v in {**base, **settings}.items() if k not in PROVENANCE_KEYS}


def _arrays(source) -> tuple | None:
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


def _source(source) -> tuple[dict, object]:
    """The settings naming where the data come from, and the data when they are already in
    memory (arrays, or a Data from load_data)."""
    if source is None:
        return {}, None
    if isinstance(source, data_mod.Data):
        return {"data": ARRAYS}, source
    if (arrays := _arrays(source)) is not None:
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


def _load(cfg, device, held):
    """The run's Data: as given, from arrays split by the config's seed, or from the config."""
    if isinstance(held, data_mod.Data):
        return held
    if held is not None:
        return data_mod.from_arrays(*held, val_size=cfg.val_size, train_size=cfg.train_size,
                                    seed=cfg.seed, device=device)
    if cfg.data == ARRAYS:
        raise data_mod.DataError("this run's data were arrays in memory; pass them again as data=")
    return data_mod.load(cfg, device)


def _folder(kind: str, out, resume: bool) -> tuple[Path, bool]:
    """The run folder (default runs/<kind>/<date-time>, made unique) and whether it resumes; an
    existing folder without `resume` is refused."""
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


def _saved(cls, out: Path):
    """The settings in a run folder's config.json; another command's folder is refused naming
    that command, a damaged config.json as damaged."""
    path = out / "config.json"
    try:
        settings = {k: v for k, v in load_json(path).items() if k not in PROVENANCE_KEYS}
    except ConfigError as e:
        raise RunError(f"cannot resume: {e}")
    try:
        return from_dict(cls, settings)
    except ConfigError as e:
        for command, other in COMMANDS.items():
            if other is not cls and _parses(other, settings):
                raise claims.ClaimError(f"{out} holds a `stackae {command}` run; resume it with "
                                        f"stackae {command} --out {out} --resume")
        raise RunError(f"cannot resume: {path} is damaged ({e})")


def _parses(cls, settings: dict) -> bool:
    try:
        from_dict(cls, settings)
    except ConfigError:
        return False
    return True


def _settings(cls, given: dict, out: Path | None = None):
    """The run's config: defaults and the given settings for a new run; for a resumed one (`out`)
    the folder's, which the given settings must agree with, except that a pretraining may change
    per-layer settings of the layers it has not finished (after a divergence, say)."""
    if out is None:
        return from_dict(cls, given)
    saved = _saved(cls, out)
    finished = checks.finished_count(out, len(saved.layers)) if cls is PretrainConfig else 0
    types, changes = field_types(cls), {}
    for name, value in given.items():
        if name not in types:
            from_dict(cls, {name: value})  # an unknown setting, named with the nearest known ones
        value = coerce(name, types[name], value)
        if value == getattr(saved, name):
            continue
        why = (checks.refused_change(saved, name, value, finished) if cls is PretrainConfig
               else f"differs from the run being resumed "
                    f"({checks.shown(to_dict(saved)[name])})")
        if why:
            raise ConfigError(name, f"{why} in {out / 'config.json'}")
        changes[name] = value
    return from_dict(cls, {**to_dict(saved), **changes})


def _prepare(cls, kind: str, data, config, settings: dict, out, resume: bool):
    """(config, data held in memory, folder, resuming) of a pretrain or finetune call."""
    given = _given(cls, config, settings)
    where, held = _source(data)
    out, resuming = _folder(kind, out, resume)
    cfg = _settings(cls, {**given, **where}, out if resuming else None)
    return cfg, held, out, resuming


def _device(cfg) -> torch.device:
    from .train import resolve_device
    try:
        return resolve_device(cfg.device)
    except ValueError as e:
        raise ConfigError("device", str(e))


# ---- a pretrained stack ---------------------------------------------------------------------

def pretrain_stack(data=None, config=None, *, out=None, resume: bool = False, quiet: bool = False,
                   **settings) -> Stack:
    """Pretrain a stack of autoencoders greedily, layer by layer, into a run folder.

    `data`: a dataset name ("mnist", ...), a path to your files, (x_train, y_train, x_test, y_test)
    as arrays or tensors, or a `Data`; default the config's dataset. `config` and `settings` are
    `stackae pretrain`'s settings (`layers=(500, 500)`, `epochs=5`, `objective="rbm"`, ...).
    Raises `Diverged` (with the finished layers kept) when training blows up."""
    from .runner import run_pretrain
    cfg, held, out, resuming = _prepare(PretrainConfig, "pretrain", data, config, settings, out,
                                        resume)
    device = _device(cfg)
    d = _load(cfg, device, held)  # everything the run needs is checked before the folder exists
    checks.check_memory(cfg.layers, d.input_dim, 0, len(d.train_x) + len(d.val_x), device)
    if resuming:
        checks.check_layers(out, cfg)
    todo = [cfg.per_layer("epochs", k) for k in range(len(cfg.layers))
            if not (out / f"layer{k + 1}.pt").exists()]
    with claims.run_folder(out, to_dict(cfg), device, resuming), \
            Progress(sum(todo) + cfg.unroll_epochs, "epoch", quiet):
        summary = run_pretrain(cfg, out, device, quiet=quiet, data=d)
    return Stack(checkpoint.load_stack(summary["stack"]), Path(summary["stack"]), summary)


# ---- a fine-tuned classifier ----------------------------------------------------------------

def finetune_classifier(init=None, data=None, config=None, *, out=None, resume: bool = False,
                        quiet: bool = False, **settings) -> Classifier:
    """Fine-tune a classifier from a pretrained stack (a `Stack` or a stack.pt path) or from random
    init ("random", the default, shaped by `layers` or by `like=` a stack), into a run folder.

    `data` as for `pretrain_stack`; `settings` are `stackae finetune`'s (`labels=1000`,
    `epochs=30`, `init_scheme="xavier"`, ...). Resuming a finished run returns it."""
    from .runner import run_finetune

    def path_of(s):
        if isinstance(s, Stack):
            if s.path is None:
                raise ValueError("this Stack has no file; save it first (stack.save(path))")
            return str(s.path)
        return str(s) if isinstance(s, Path) else s
    if init is not None:
        settings = {**settings, "init": path_of(init)}
    if "like" in settings:
        settings["like"] = path_of(settings["like"])
    cfg, held, out, resuming = _prepare(FinetuneConfig, "finetune", data, config, settings, out,
                                        resume)
    if cfg.init != "random" and not Path(cfg.init).exists():
        raise ConfigError("init", f"{cfg.init} does not exist (expected a stack.pt or 'random')")
    if resuming and (out / "result.json").exists():
        if not quiet:
            say(f"already finished: {out / 'result.json'}")
        return Classifier(out)
    device = _device(cfg)
    d = _load(cfg, device, held)  # everything the run needs is checked before the folder exists
    data_mod.check_budget(cfg.label_budget, len(d.train_x), d.n_classes)
    for stack in (cfg.init, cfg.like):
        if stack and stack != "random":
            checks.check_stack(stack, d.input_dim)
    if cfg.init == "random" and not cfg.like:
        checks.check_memory(cfg.layers, d.input_dim, d.n_classes, 0, device)
    with claims.run_folder(out, to_dict(cfg), device, resuming), \
            Progress(cfg.epochs, "epoch", quiet):
        run_finetune(cfg, out, device, quiet=quiet, data=d)
    return Classifier(out)


# ---- an ablation grid -----------------------------------------------------------------------

@dataclasses.dataclass
class _Grid:
    """An ablation about to start: its settings, folder, cells and data sizes."""
    cfg: AblateConfig
    out: Path
    resuming: bool
    cells: list
    mine: list
    sizes: dict
    device: object
    arrays: tuple | None  # the user's arrays, saved as <out>/data.npz when the grid starts


def _grid(data, config, settings: dict, out, resume: bool, shard, quiet: bool,
          local: bool = True, dry_run: bool = False) -> _Grid:
    """Settings, data sizes, budgets and cells of a grid, checked before its folder exists. A
    `local` grid loads its data here; a dry run or a grid for SLURM counts known datasets without
    loading them, and leaves the device to the nodes."""
    from . import ablate as A
    from .grid import expand, shard as shard_of
    given = _given(AblateConfig, config, settings)
    if isinstance(data, data_mod.Data):
        raise TypeError("run_ablation needs the data's arrays or a path (each seed draws its own "
                        "validation split), not a Data")
    held = _arrays(data)
    if held is None:
        where, _ = _source(data)
    else:
        held = data_mod.checked_arrays(*(a.detach().cpu().numpy() if isinstance(a, torch.Tensor)
                                         else np.asarray(a) for a in held),
                                       where=("x_train/y_train", "x_test/y_test"))
    # a shard joins a grid that other shards may have started, with the same settings
    out, exists = _folder("ablate", out, resume or shard is not None)
    resuming = exists and resume
    if held is not None:
        saved = out / "data.npz"
        where = {} if resuming and saved.exists() else {"data": str(saved)}
    cfg = _settings(AblateConfig, {**given, **where}, out if resuming else None)
    device = _device(cfg) if local else cfg.device
    known = A.DATASET_SIZES if dry_run or not local else None
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
    return _Grid(cfg, out, resuming, cells, mine, sizes, device, held)


def _start(g: _Grid) -> None:
    """Check the stacks the folder already holds, then create or join it (config.json, grid.json,
    and the user's arrays as data.npz)."""
    from . import ablate as A
    from .runlog import write_json
    if g.out.exists():
        checks.check_grid_stacks(g.out, g.cfg, g.mine)

    def write_plan():
        write_json(g.out / "grid.json", A.plan(g.cfg, g.out, g.cells, g.sizes))
        if g.arrays is not None and not (g.out / "data.npz").exists():
            with tempfile.TemporaryDirectory(dir=g.out) as tmp:
                np.savez(Path(tmp) / "data.npz", **dict(zip(NAMES, g.arrays)))
                shutil.move(Path(tmp) / "data.npz", g.out / "data.npz")
    claims.join_grid(g.out, to_dict(g.cfg), g.device, g.resuming, write_plan)


def plan_ablation(data=None, config=None, *, out=None, resume: bool = False, shard=None,
                  **settings) -> list[str]:
    """What `run_ablation` with these arguments would do (cells, pretraining runs, estimated work),
    as lines of text; nothing is run or written."""
    from . import ablate as A
    g = _grid(data, config, settings, out, resume, shard, quiet=True, dry_run=True)
    return A.describe_plan(g.cfg, g.out, g.cells, g.mine, g.sizes)


def run_ablation(data=None, config=None, *, out=None, resume: bool = False, shard=None,
                 quiet: bool = False, **settings) -> Ablation:
    """Run an ablation grid (inits x seeds x label budgets x depths, paired by seed) into a folder,
    then write its report once every cell has finished; an existing folder continues with
    `resume=True`.

    `data` as for `pretrain_stack` (arrays are saved once as <out>/data.npz, so the folder can be
    rerun and every seed draws its own split); `settings` are `stackae ablate`'s (`inits=("rbm",
    "random")`, `seeds=range(5)`, `labels=("100", "all")`, ...); `shard=(i, n)` runs slice i of n
    (shards share `out` and may run at once; each cell runs in one process)."""
    from . import ablate as A
    g = _grid(data, config, settings, out, resume, shard, quiet)
    _start(g)
    with claims.cells_to_run(g.out, g.mine) as (free, busy):
        todo = [c for c in free if not A.finished(g.out, c)]
        with Progress(len(todo), "cell", quiet) as bar:
            if busy:
                bar.line(f"{len(busy)} of this run's cells are being run by another process; "
                         f"they are left to it")
            if len(todo) < len(free):
                bar.line(f"{len(free) - len(todo)} of {len(free)} cells were already finished")

            def progress(line):
                bar.line(line)
                bar.update(sum(A.finished(g.out, c) for c in todo))
            A.run_cells(g.cfg, g.out, free, g.device, progress)
    ablation = Ablation(g.out)
    if ablation.finished:
        ablation.write_report()
    return ablation


def run_tuning(data=None, config=None, *, out=None, resume: bool = False, trials: int | None = None,
               space=None, tune_seeds=None, quiet: bool = False, **settings) -> Ablation:
    """Tune every arm on the same budget, then run the grid with each arm's choice (stackae tune).

    For each arm and label budget, `trials` (default 20) settings drawn from `space` (a dict, a
    JSON file or JSON text; default the fine-tuning learning rate from a tenth to ten times the
    grid's) are fine-tuned on `tune_seeds` (default the grid's first two seeds) and judged on
    validation error only; the best then runs over every seed as a paired ablation whose report
    states the space, the budget and each choice. `resume=True` continues where it stopped, to
    the same choices. `data` and `settings` as for `run_ablation`."""
    import json as _json

    from . import tune as T
    from .runlog import write_json
    g = _grid(data, config, settings, out, resume, None, quiet)
    path = g.out / "tune.json"
    saved = _json.loads(path.read_text()) if g.resuming and path.exists() else {}
    if isinstance(space, (str, Path)):
        space = T.read_space(space)
    asked = {"space": space, "trials": trials,
             "tune_seeds": None if tune_seeds is None else [int(s) for s in tune_seeds]}
    for name, value in asked.items():
        if saved and value is not None and value != saved[name]:
            raise ConfigError(name, f"{_json.dumps(value)} differs from the tuning being resumed "
                                    f"({_json.dumps(saved[name])} in {path})")
    trials = saved.get("trials") or trials or 20
    seeds = tuple(saved.get("tune_seeds") or asked["tune_seeds"] or g.cfg.seeds[:2])
    space = saved.get("space") or space or T.default_space(g.cfg)
    if trials < 1:
        raise ConfigError("trials", f"must be at least 1, got {trials}")
    T.distributions(space, g.cfg)  # checked before the folder exists
    _start(g)
    if not path.exists():
        from .ablate import command
        write_json(path, {**T.tune_setup(space, trials, seeds),
                          "command": "stackae tune " + command(g.cfg, g.out).split(" ", 2)[2]
                          + f" --trials {trials} --space {shlex.quote(_json.dumps(space))}"
                          + f" --tune-seeds {','.join(map(str, seeds))}"})
    n = len(g.cfg.inits) * len(g.cfg.labels)
    with claims.locked(g.out / "tune", "tuning in"), \
            Progress(n * trials + len(g.cells), "run", quiet) as bar:
        done = [sum(min(len(T.trials_of(g.out / "tune" / f"n{b}", a)), trials)
                    for b in g.cfg.labels for a in g.cfg.inits)]  # finished before a resume
        bar.update(done[0])

        def progress(line):  # one line per finished trial of an arm
            bar.line(line)
            done[0] += 1
            bar.update(min(done[0], n * trials))
        choices = T.tune(g.cfg, g.out, space, trials, seeds, g.device, progress)
        write_json(path, {**_json.loads(path.read_text()), "choices": choices})
        from .ablate import finished

        def final_progress(line):  # the bar counts finished trials, then finished cells
            bar.line(line)
            bar.update(n * trials + sum(finished(g.out, c) for c in g.cells))
        with claims.cells_to_run(g.out, g.cells) as (free, busy):
            T.final(g.cfg, g.out, free, choices, g.device, final_progress)
    ablation = Ablation(g.out)
    if ablation.finished:
        ablation.write_report()
    return ablation


# ---- data -------------------------------------------------------------------------------------

def load_data(source="mnist", *, val_size: int | None = None, train_size: int | None = None,
              seed: int = 0, device="cpu") -> data_mod.Data:
    """A data set as tensors (train/val/test images scaled to [0, 1], labels), split as every run
    splits it: `source` is a dataset name, a path to your files or (x_train, y_train, x_test,
    y_test)."""
    where, held = _source(source)
    cfg = from_dict(PretrainConfig, {"val_size": val_size, "train_size": train_size, "seed": seed,
                                     **where})
    return _load(cfg, torch.device(device), held)
