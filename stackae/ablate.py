"""Running an ablation grid (grid.py): its cells' pretraining and fine-tuning, resumable, in shards.

    stackae ablate                                # denoising vs xavier, 8 seeds, 100/1000/10000/all labels
    stackae ablate --preset full --out runs/ablate/full --shard 2/4
    stackae ablate --preset full --out runs/ablate/gpu --seed-batch 8   # at most 8 networks at once

Pairing is by seed: every arm of a seed shares the validation split, the labelled subset, the head
and the fine-tuning batch order (all derived from the seed), so arms differ only in their hidden
weights. Pretraining runs once per (objective, depth, seed) and is shared by every budget. The
seeds of an objective pretrain together, and every arm and seed of a label budget fine-tunes
together, as one K-network loop (--seed-batch caps K).

    <out>/config.json                               the grid's settings (a valid --config file)
    <out>/grid.json                                 the plan: cells, pretraining runs, command
    <out>/runs/pretrain/<objective>-d<D>-s<S>/      stack.pt and its run folder
    <out>/runs/finetune/<init>-d<D>-n<budget>-s<S>/ result.json and its run folder (one cell)
    <out>/results.jsonl                             one line per finished cell
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .config import PROVENANCE_KEYS, DataConfig, from_dict, load_json, to_dict
from .config_grid import AblateConfig
from .grid import Cell, plan
from .results import append_result, record, recorded_ids
from .runlog import RunError, write_json


def start(cfg: AblateConfig, out: Path, cells: list[Cell], sizes: dict, device) -> None:
    """Create the folder: config.json (with provenance) and grid.json, before any cell runs.
    `device` is where the cells run (a name when SLURM nodes will choose)."""
    from .runlog import provenance
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create output folder {out}: {e.strerror}")
    write_json(out / "config.json", {**to_dict(cfg), "provenance": provenance(device)})
    write_json(out / "grid.json", plan(cfg, out, cells, sizes))


@contextmanager
def locked(path: Path):
    """An exclusive lock file, so two shards needing the same stack pretrain it once."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): shards must not share a stack there
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def batch_cap(cfg: AblateConfig, device, input_dim: int = 784, classes: int = 10) -> int:
    """The most networks one loop trains: --seed-batch when given; else all on a GPU (bounded by
    its free memory). On a CPU at most 8, and few enough that one layer's K-stacked weight
    gradient stays within 32 MiB: glibc's malloc hands larger blocks back to the system when
    freed, so a larger gradient is mapped anew at every step, which costs more than batching
    saves (at batch 20 a 9 x 1000 x 1000 gradient took 5x as long per network as an 8 x 1000 x
    1000 one: scripts/layouts.py --cliff)."""
    if cfg.seed_batch:
        return cfg.seed_batch
    widths = (input_dim,) + cfg.layers + (classes,)
    if getattr(device, "type", device) != "cuda":
        largest = 4 * max(a * b for a, b in zip(widths, widths[1:]))
        return max(1, min(8, 32 * 2**20 // largest))
    import torch
    free, _ = torch.cuda.mem_get_info(device)
    per_net = 4 * 4 * sum(a * b for a, b in zip(widths, widths[1:]))  # weights, grads, 2 states
    per_net += 4 * 2 * max(cfg.finetune_batch_size, cfg.pretrain_batch_size) * sum(widths)
    return max(1, int(0.5 * free / per_net))


def chunks(items: list, size: int) -> list[list]:
    return [items[k:k + size] for k in range(0, len(items), size)]


def architecture(cfg: AblateConfig, cell: Cell) -> str:
    """The hidden units of a cell's network: RBM layers are sigmoid whatever --activation says."""
    return "sigmoid" if cell.init == "rbm" else cfg.activation


@dataclasses.dataclass(frozen=True)
class Job:
    """One cell to run, and where: its run folder, the results.jsonl that records it, the folder
    of the stacks it starts from, and its own values of settings that may differ within one K
    (space.PER_ARM). A grid's jobs are its cells in <out>; a tuning round's are its trials' cells."""
    cell: Cell
    folder: Path
    results: Path
    stacks: Path
    settings: tuple = ()  # (name, value) pairs

    def config(self, cfg: AblateConfig) -> AblateConfig:
        return dataclasses.replace(cfg, **dict(self.settings)) if self.settings else cfg

    @property
    def stack(self) -> Path | None:
        return self.stacks / self.cell.pretrain if self.cell.pretrain else None


def ensure_stacks(cfg: AblateConfig, jobs: list[Job], data, device, say, cap: int) -> None:
    """Pretrain the stacks these jobs start from that are not finished, those that differ only in
    seed together (up to `cap`); a folder without stack.pt (killed) is resumed from its finished
    layer checkpoints. Each stack is locked, so concurrent shards pretrain it once."""
    from contextlib import ExitStack

    from .checks import matching_stack, stacks_source
    from .runlog import copy_run_folder
    from .runner import run_pretrains
    source = stacks_source(cfg.stacks_from)
    wanted = {}  # the seeds' settings without the seed -> {stack folder: its settings}
    for j in jobs:
        if j.stack and not (j.stack / "stack.pt").exists():
            pcfg = j.config(cfg).pretrain_config(j.cell.init, j.cell.seed, j.cell.depth)
            wanted.setdefault(dataclasses.replace(pcfg, seed=0), {})[j.stack] = pcfg
    for stacks in wanted.values():
        for part in chunks(sorted(stacks.items(), key=lambda kv: (kv[1].seed, str(kv[0]))), cap):
            with ExitStack() as held:
                for folder, _ in part:
                    folder.parent.mkdir(parents=True, exist_ok=True)
                    held.enter_context(locked(folder.parent / f".{folder.name}.lock"))
                for f, c in part:
                    have = source and matching_stack(source / f.name, c)
                    if have and not (f / "stack.pt").exists() and not f.exists():
                        copy_run_folder(have, f)
                        say(f"pretrain {f.name}: copied from {have} (the same settings)")
                part = [(f, c) for f, c in part if not (f / "stack.pt").exists()]
                if not part:
                    continue
                names = ", ".join(f.name for f, _ in part)
                say(f"pretrain {names}" + (" (resuming finished layers)" if any(
                    f.exists() for f, _ in part) else ""))
                for f, _ in part:
                    note_resume(f, device)
                t0 = time.perf_counter()  # this call's (a resumed stack's summary counts more)
                run_pretrains([c for _, c in part], [f for f, _ in part], device,
                              [data(c.seed) for _, c in part], quiet=True)
                say(f"pretrain {names}: done in {time.perf_counter() - t0:.1f}s")


def note_resume(folder: Path, device) -> None:
    """A grid stack pretrained again in a folder that has its config.json keeps its first run's
    provenance, and this run is added to its `resumed` list (as claims.record does for a run
    resumed by name), with the layers it reloads: the stack is this run's work from there up."""
    from .claims import resume_entry
    from .runlog import finished_layers, read_config
    saved = read_config(folder / "config.json")
    if saved is not None and "provenance" in saved:
        entry = {**resume_entry(device), "layers_reloaded": sorted(finished_layers(folder))}
        write_json(folder / "config.json", {**saved, "resumed": saved.get("resumed", []) + [entry]})


def finetune_groups(cfg: AblateConfig, jobs: list[Job], cap: int) -> list[list[Job]]:
    """The jobs in groups that can train as one loop: every arm and seed of a depth and label
    budget (one architecture), in the order the jobs first appear; cap 1 keeps every job alone."""
    if cap == 1:
        return [[j] for j in jobs]
    groups = {}
    for j in jobs:
        c = j.cell
        groups.setdefault((c.depth, c.budget, architecture(cfg, c)), []).append(j)
    return list(groups.values())


def run_cells(cfg: AblateConfig, out: Path, cells: list[Cell], device, say=None,
              per_arm: dict | None = None) -> dict:
    """Run the grid's cells not yet finished, each in <out>/runs/finetune/<id> from the stacks in
    <out>/runs/pretrain (see run_jobs). `per_arm` gives an arm its own values of settings that may
    differ within one K (space.PER_ARM: `{"xavier": {"finetune_lr": 0.3, "dropout": 0.5}}`, or a
    pretrained arm's pretraining settings), with which it still trains beside the other arms."""
    out = Path(out)
    return run_jobs(cfg, [Job(c, out / "runs" / "finetune" / c.id, out / "results.jsonl",
                              out / "runs" / "pretrain",
                              tuple(sorted((per_arm or {}).get(c.init, {}).items())))
                          for c in cells], device, say)


def job_finetune_config(cfg: AblateConfig, job: Job, read_test: bool = True):
    """The FinetuneConfig a job's cell runs with."""
    c = job.cell
    return dataclasses.replace(job.config(cfg).finetune_config(
        c.init, c.seed, c.depth, c.budget, str(job.stack / "stack.pt") if job.stack else None),
        read_test=read_test)


def run_jobs(cfg: AblateConfig, jobs: list[Job], device, say=None, read_test: bool = True,
             prune=None) -> dict:
    """Run the jobs not yet finished. Jobs that share a depth, label budget and architecture
    train together (every arm, seed and trial at once, up to the batch cap); each still gets its
    own folder, result.json and results line, the same however it was batched. A folder without
    result.json (a killed run) continues from its resume point (resume.pt), or without one is
    deleted and redone. With `read_test` off (tuning trials) the test set is never evaluated;
    `prune` gives a job its pruner (finetune's), or None."""
    from .checkpoint import load_resume
    from .data import label_subset, load
    from .runlog import RESUME_NAME
    from .runner import run_finetunes
    say = say or (lambda line: None)
    recorded = {}

    def where(job):
        return job.folder.relative_to(job.results.parent).as_posix()
    counts = {"ran": 0, "skipped": 0}
    position = {j: k for k, j in enumerate(jobs, 1)}
    todo = []
    for job in jobs:
        if job.results not in recorded:
            recorded[job.results] = recorded_ids(job.results.parent)
        if (job.folder / "result.json").exists():
            counts["skipped"] += 1
            (job.folder / RESUME_NAME).unlink(missing_ok=True)  # killed before it went
            if job.cell.id not in recorded[job.results]:  # killed between result.json and line
                append_result(job.results, record(job.cell, json.loads(
                    (job.folder / "result.json").read_text()), where(job)))
        else:
            todo.append(job)
    datas, subsets = {}, {}

    def data(seed):
        if seed not in datas:
            datas[seed] = load(DataConfig(dataset=cfg.dataset, data=cfg.data,
                                          train_size=cfg.train_size, val_size=cfg.val_size,
                                          seed=seed, device=cfg.device), device)
        return datas[seed]
    first = data(todo[0].cell.seed) if todo else None
    cap = min((batch_cap(c, device, *((first.input_dim, first.n_classes) if first else ()))
               for c in {j.config(cfg) for j in todo}), default=1)  # the largest batches decide

    def subset(seed, budget):  # one tensor per (seed, budget): the arms of a seed share it
        if (seed, budget) not in subsets:
            d, b = data(seed), (None if budget == "all" else int(budget))
            subsets[seed, budget] = label_subset(d.train_y, b, d.n_classes, seed)
        return subsets[seed, budget]

    for whole in finetune_groups(cfg, todo, cap):
        seeds = {j.cell.seed for j in whole}
        for s in set(datas) - seeds if cap == 1 else ():  # one seed at a time: free the last
            del datas[s]
            subsets = {k: v for k, v in subsets.items() if k[0] in seeds}
        ensure_stacks(cfg, whole, data, device, say, cap)
        at = {}  # the jobs by the epoch of their resume points (0: none that fits), one loop each
        for job in whole:
            point = load_resume(job.folder, job_finetune_config(cfg, job, read_test), device)
            at.setdefault(point["epoch"] if point else 0, []).append(job)
        for epoch, group in ((e, g) for e, part in at.items() for g in chunks(part, cap)):
            for job in group:
                if job.folder.exists() and not epoch:
                    shutil.rmtree(job.folder)
            names = ", ".join(j.cell.id for j in group)  # a group may train for long: say so
            say((f"{names}: resuming after epoch {epoch}" if epoch else f"{names}: fine-tuning")
                + (f" ({len(group)} networks together)" if len(group) > 1 else ""))
            fcfgs = [job_finetune_config(cfg, j, read_test) for j in group]
            cells = [j.cell for j in group]
            results = run_finetunes(fcfgs, [j.folder for j in group], device,
                                    [data(c.seed) for c in cells], quiet=True,
                                    hparams=[{"arm": c.init, "budget": c.budget, "depth": c.depth}
                                             for c in cells],
                                    labelled=[subset(c.seed, c.budget) for c in cells],
                                    prune=[prune(j) for j in group] if prune else None)
            for job, result in zip(group, results):
                append_result(job.results, record(job.cell, result, where(job)))
                counts["ran"] += 1
                err = ("test error", result["test_error"]) if result["test_error"] is not None \
                    else ("validation error", result["best_val_error"])
                say(f"[{position[job]}/{len(jobs)}] {job.cell.id}: {err[0]} "
                    f"{100 * err[1]:.2f}% ({result['seconds']:.1f}s"
                    + (f", {len(group)} networks together)" if len(group) > 1 else ")"))
    return counts


def load_config(out: Path) -> AblateConfig:
    return from_dict(AblateConfig, {k: v for k, v in load_json(Path(out) / "config.json").items()
                                    if k not in PROVENANCE_KEYS})


def stderr_say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
