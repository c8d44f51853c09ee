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
from pathlib import Path

import torch

from . import checkpoint, checks, claims
from . import data as data_mod
from . import resolve as R
from .artifacts import Ablation, Classifier, Stack, load_ablation, load_model, load_stack
from .config import ACTIVATIONS, ConfigError, FinetuneConfig, PretrainConfig, from_dict, to_dict
from .schema import coerce, field_types
from .progress import Progress, say

__all__ = ["pretrain_stack", "finetune_classifier", "run_ablation", "plan_ablation", "run_tuning",
           "load_data", "load_stack", "load_model", "load_ablation", "Stack", "Classifier",
           "Ablation"]


# ---- a pretrained stack ---------------------------------------------------------------------

def pretrain_stack(data=None, config=None, *, out=None, resume: bool = False, quiet: bool = False,
                   **settings) -> Stack:
    """Pretrain a stack of autoencoders greedily, layer by layer, into a run folder.

    `data`: a dataset name ("mnist", ...), a path to your files, (x_train, y_train, x_test, y_test)
    as arrays or tensors, or a `Data`; default the config's dataset. `config` and `settings` are
    `stackae pretrain`'s settings (`layers=(500, 500)`, `epochs=5`, `objective="rbm"`, ...).
    Raises `Diverged` (with the finished layers kept) when training blows up."""
    from .runner import run_pretrain
    cfg, held, out, resuming = R.prepare_run(PretrainConfig, "pretrain", data, config, settings, out,
                                        resume)
    if resuming and (out / "stack.pt").exists():  # nothing to redo (an unrolled one is costly)
        if not quiet:
            say(f"already finished: {out / 'stack.pt'}")
        return Stack.load(out)
    device = R.device_of(cfg)
    d = R.load_for(cfg, device, held)  # everything the run needs is checked before the folder exists
    checks.check_memory(cfg.layers, d.input_dim, 0, len(d.train_x) + len(d.val_x), device)
    if resuming:
        checks.check_layers(out, cfg)
    mark, seen = out / "data.sha256", data_mod.digest(d)
    if resuming and mark.exists() and mark.read_text().strip() != seen:
        raise data_mod.DataError(f"the data given are not those {out} was started with (its "
                                 f"finished layers learned from other images; {mark}); resume "
                                 f"with the same data, or use another folder")
    todo = [cfg.per_layer("epochs", k) for k in range(len(cfg.layers))
            if not (out / f"layer{k + 1}.pt").exists()]
    with claims.run_folder(out, to_dict(cfg), device, resuming), \
            Progress(sum(todo) + cfg.unroll_epochs, "epoch", quiet):
        if not mark.exists():
            mark.write_text(seen + "\n")
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
    cfg, held, out, resuming = R.prepare_run(FinetuneConfig, "finetune", data, config, settings, out,
                                        resume)
    if cfg.init != "random" and not Path(cfg.init).exists():
        raise ConfigError("init", f"{cfg.init} does not exist (expected a stack.pt or 'random')")
    if resuming and (out / "result.json").exists():
        if not quiet:
            say(f"already finished: {out / 'result.json'}")
        return Classifier(out)
    device = R.device_of(cfg)
    d = R.load_for(cfg, device, held)  # everything the run needs is checked before the folder exists
    data_mod.check_budget(cfg.label_budget, len(d.train_x), d.n_classes)
    given = R.named_settings(FinetuneConfig, config, settings)
    for stack in (cfg.init, cfg.like):
        if stack and stack != "random":
            layers = checks.check_stack(stack, d.input_dim)["layers"]
            acts = list(dict.fromkeys(l["activation"] for l in layers))
            shape = {"layers": tuple(l["width"] for l in layers), "activation": ",".join(acts)}
            # what config.json records of that shape, so that it reruns as a --config file:
            # --activation holds one of its choices, else its default stands in
            one = acts[0] if len(acts) == 1 and acts[0] in ACTIVATIONS else None
            recorded = {**shape, "activation": one or FinetuneConfig().activation}
            for name, real in shape.items():  # a stack's shape is the network's, not --layers'
                if given.get(name) is None:
                    continue
                asked = coerce(name, field_types(FinetuneConfig)[name], given[name])
                if asked not in (real, recorded[name]):
                    raise ConfigError(name, f"is {checks.shown(asked)}, but the stack {stack} is "
                                      f"{checks.shown(real)}, which shapes the network; leave "
                                      f"{name} out (it shapes random init without a stack)")
            cfg = dataclasses.replace(cfg, **recorded)
    if cfg.init == "random" and not cfg.like:
        checks.check_memory(cfg.layers, d.input_dim, d.n_classes, 0, device)
    with claims.run_folder(out, to_dict(cfg), device, resuming), \
            Progress(cfg.epochs, "epoch", quiet):
        run_finetune(cfg, out, device, quiet=quiet, data=d)
    return Classifier(out)


# ---- an ablation grid -----------------------------------------------------------------------

def plan_ablation(data=None, config=None, *, out=None, resume: bool = False, shard=None,
                  **settings) -> list[str]:
    """What `run_ablation` with these arguments would do (cells, pretraining runs, estimated work),
    as lines of text; nothing is run or written."""
    from . import grid as G
    g = R.prepare_grid(data, config, settings, out, resume, shard, quiet=True, dry_run=True)
    return G.describe_plan(g.cfg, g.out, g.cells, g.mine, g.sizes)


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
    from . import grid as G
    g = R.prepare_grid(data, config, settings, out, resume, shard, quiet)
    R.start_grid(g)
    with claims.cells_to_run(g.out, g.mine) as (free, busy):
        todo = [c for c in free if not G.finished(g.out, c)]
        with Progress(len(todo), "cell", quiet) as bar:
            if busy:
                bar.line(f"{len(busy)} of this run's cells are being run by another process; "
                         f"they are left to it")
            if len(todo) < len(free):
                bar.line(f"{len(free) - len(todo)} of {len(free)} cells were already finished")

            def progress(line):
                bar.line(line)
                bar.update(sum(G.finished(g.out, c) for c in todo))
            A.run_cells(g.cfg, g.out, free, g.device, progress)
    ablation = Ablation(g.out)
    if ablation.finished:
        ablation.write_report()
    return ablation


def plan_tuning(data=None, config=None, *, out=None, resume: bool = False,
                trials: int | None = None, space=None, tune_seeds=None,
                trials_at_once: int | None = None, prune_after: int | None = None,
                **settings) -> list[str]:
    """What `run_tuning` with these arguments would do (trials, their runs, the final ablation,
    estimated work, progress of a resumed tuning), as lines of text; nothing is run or written."""
    from . import tune_plan, tune_setup
    g = R.prepare_grid(data, config, settings, out, resume, None, quiet=True, dry_run=True,
                       kind="tune")
    chosen = tune_setup.setup(g.cfg, g.out, g.resuming, space, trials, tune_seeds,
                              trials_at_once, g.device, prune_after)
    return tune_plan.describe(g.cfg, g.out, chosen, g.sizes)


def run_tuning(data=None, config=None, *, out=None, resume: bool = False, trials: int | None = None,
               space=None, tune_seeds=None, trials_at_once: int | None = None,
               prune_after: int | None = None, quiet: bool = False, **settings) -> Ablation:
    """Tune every arm on the same budget, then run the grid with each arm's choice (stackae tune).

    For each arm and label budget, `trials` (default 20) settings drawn from `space` (a dict, a
    JSON file or JSON text, a setting's range or list shared by the arms or given per arm; default
    the fine-tuning learning rate from a tenth to ten times the grid's) are fine-tuned on
    `tune_seeds` (default the grid's first two seeds) and judged on validation error only; the
    best then runs over every seed as a paired ablation whose report states the space, the
    budget and each choice. `trials_at_once` trials of each arm are proposed together and train
    as one K-network loop (default 1 on a CPU, 5 on a GPU). With `prune_after` (an epoch; default
    0, none), a trial's network whose best validation error from that epoch on is worse than the
    median of the arm's finished trials at the same epoch stops there (Optuna's MedianPruner,
    once 5 trials have finished). `resume=True` continues where it stopped, to the same choices.
    `data` and `settings` as for `run_ablation`."""
    from . import tune as T
    from . import tune_final, tune_setup
    from .runlog import write_json
    from .space import read_tuning
    g = R.prepare_grid(data, config, settings, out, resume, None, quiet, kind="tune")
    chosen = tune_setup.setup(g.cfg, g.out, g.resuming, space, trials, tune_seeds,
                              trials_at_once, g.device, prune_after)
    space, trials, seeds = chosen["space"], chosen["trials"], tuple(chosen["tune_seeds"])
    R.start_grid(g, T.chosen_pretraining(g.cfg, g.out, space, trials))  # its stacks' settings
    path = g.out / "tune.json"
    if not path.exists():
        write_json(path, {**chosen, "command": tune_setup.command(g.cfg, g.out, chosen)})
    n = len(g.cfg.inits) * len(g.cfg.labels)
    with claims.locked(g.out / "tune", "tuning in"), \
            Progress(n * trials + len(g.cells), "run", quiet) as bar:
        bar.update(T.finished_trials(g.cfg, g.out, trials))  # finished before a resume

        def progress(line):  # the bar counts the finished trials
            bar.line(line)
            bar.update(T.finished_trials(g.cfg, g.out, trials))
        choices = T.tune(g.cfg, g.out, space, trials, seeds, g.device, progress,
                         chosen["trials_at_once"], chosen["startup"], chosen["prune_after"])
        write_json(path, {**read_tuning(g.out), "choices": choices})
        from .grid import finished

        def final_progress(line):  # the bar counts finished trials, then finished cells
            bar.line(line)
            bar.update(n * trials + sum(finished(g.out, c) for c in g.cells))
        with claims.cells_to_run(g.out, g.cells) as (free, busy):
            tune_final.final(g.cfg, g.out, free, choices, g.device, final_progress)
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
    where, held = R.data_source(source)
    cfg = from_dict(PretrainConfig, {"val_size": val_size, "train_size": train_size, "seed": seed,
                                     **where})
    return R.load_for(cfg, torch.device(device), held)
