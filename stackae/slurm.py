"""SLURM for ablations: the grid's cells as one job array through submitit, each job a chunk of
cells (by default one seed and depth, so it loads its data once and pretrains its own stacks).

    stackae ablate --preset full --out runs/ablate/full --executor slurm --slurm-partition gpu

Jobs write into the same folder as local runs and shards; `stackae report` merges them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from .ablate import load_config, run_cells
from .grid import Cell, expand, split
from .runlog import RunError


def run_chunk(out: str, ids: list[str]) -> dict:
    """A SLURM job's work: the named cells of the grid in `out` (settings from its config.json)."""
    from .train import resolve_device
    cfg = load_config(Path(out))
    by_id = {c.id: c for c in expand(cfg)}
    return run_cells(cfg, Path(out), [by_id[i] for i in ids], resolve_device(cfg.device),
                     say=lambda line: print(line, flush=True))


def submit(out: Path, cells: list[Cell], jobs: int, *, partition: Optional[str] = None,
           time_min: int = 120, gpus: int = 0, cpus: int = 2, cluster: Optional[str] = None):
    """Dispatch the cells as one job array of `jobs` chunks through submitit (cluster='local' runs
    them as local processes, for tests). Returns the submitit jobs."""
    try:
        import submitit
    except ImportError:
        raise RunError("--executor slurm needs submitit, which is not installed: "
                       "pip install 'stackae[slurm]'")
    chunks = [c for c in split(cells, min(jobs, len(cells))) if c]
    ex = submitit.AutoExecutor(folder=out / "slurm" / "%j", cluster=cluster)
    params = dict(name=f"stackae-ablate-{out.name}", timeout_min=time_min, cpus_per_task=cpus,
                  gpus_per_node=gpus, slurm_array_parallelism=len(chunks))
    if partition:
        params["slurm_partition"] = partition
    ex.update_parameters(**params)
    return ex.map_array(run_chunk, [str(out)] * len(chunks), [[c.id for c in ch] for ch in chunks])


def default_jobs(cells: list[Cell]) -> int:
    """One job per (seed, depth): each loads its data once and pretrains its own stacks."""
    return len({(c.seed, c.depth) for c in cells})


def submit_grid(settings: dict, out, resume: bool, shard, quiet: bool, jobs: Optional[int], *,
                partition: Optional[str], time_min: int, gpus: int, cpus: int, wait: bool,
                say: Callable[[str], None]):
    """`stackae ablate --executor slurm`: check the grid and create its folder, submit its cells
    (by default one job per seed and depth), and with `wait`, wait for the jobs and write the
    report. Returns the grid's Ablation once waited for, else None."""
    from .artifacts import Ablation
    from .resolve import prepare_grid, start_grid
    g = prepare_grid(None, None, settings, out, resume, shard, quiet, local=False)
    start_grid(g)
    submitted = submit(g.out, g.mine, jobs or default_jobs(g.mine), partition=partition,
                       time_min=time_min, gpus=gpus, cpus=cpus)
    say(f"submitted {len(submitted)} jobs ({', '.join(j.job_id for j in submitted)}); "
        f"logs in {g.out / 'slurm'}")
    if not wait:
        say(f"when they finish: stackae report {g.out}")
        return None
    for j in submitted:
        try:
            j.result()
        except Exception as e:  # submitit re-raises the job's failure with its log's tail
            raise RunError(f"job {j.job_id} failed ({type(e).__name__}); see {g.out / 'slurm'}")
    grid = Ablation(g.out)
    if grid.finished:
        grid.write_report()
    return grid
