"""Claiming run folders, so two processes never write one run with different settings.

A pretrain or finetune folder belongs to one process while it runs: an flock on `.stackae.lock`
(released by the kernel when the process dies, so a killed run never leaves a stale claim) and a
config.json written under it. An ablation folder is shared by its shards: the first writes
config.json, every later shard must present the same settings, and each cell is locked by the
process that runs it, so the same shard started twice runs each cell once.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .config import RUN_ONLY
from .runlog import LOCK_NAME, RunError, provenance, read_config, write_json

try:
    import fcntl
except ImportError:  # no flock (Windows): folders are not guarded there
    fcntl = None


class ClaimError(RunError):
    """A folder that another run holds, or a shard whose settings differ from its grid's: a usage
    error naming the option (--out, or the differing setting)."""

    def __init__(self, message: str, option: str = "--out"):
        super().__init__(message)
        self.option = option


def try_lock(path: Path, wait: bool = False):
    """An open file holding an exclusive lock on `path`, or None when another process holds it."""
    try:
        f = open(path, "a+")
    except OSError as e:
        raise RunError(f"cannot create {path}: {e.strerror}")
    if fcntl is None:
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def holder(path: Path) -> str:
    try:
        return f" (pid {int(Path(path).read_text().split()[0])})"
    except (OSError, ValueError, IndexError):
        return ""


@contextmanager
def locked(folder: Path, what: str, wait: bool = False):
    """Hold the folder's lock for the block; refused at once when another process holds it, or
    (`wait`, for the moment it takes a shard to join) once that process lets go."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create output folder {folder}: {e.strerror}")
    lock = try_lock(folder / LOCK_NAME, wait)
    if lock is None:
        raise ClaimError(f"another stackae process{holder(folder / LOCK_NAME)} is {what} {folder}; "
                         f"wait for it to finish or choose another --out")
    try:
        yield
    finally:
        lock.close()


def resume_entry(device) -> dict:
    return {"argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(device)}


def first_difference(saved: dict, settings: dict) -> str | None:
    return next((k for k in settings if k not in RUN_ONLY and saved.get(k) != settings[k]), None)


def record(folder: Path, settings: dict, device, resuming: bool, shared: bool = False) -> None:
    """Write config.json for a new run, or note a resume in the existing one (its settings and the
    first run's argv and time are kept). Call with the folder's lock held. A new run finding a
    config.json lost a race to another run; a shard (`shared`) joins only with equal settings."""
    path = Path(folder) / "config.json"
    saved = read_config(path)
    if saved is None and path.exists():
        raise RunError(f"{path} is damaged (not a JSON object of settings); cannot continue this "
                       f"run")
    if saved is None:
        write_json(path, {**settings, "provenance": provenance(device)})
        return
    if not resuming and not shared:
        raise ClaimError(f"{folder} was just created by another run; choose another --out")
    name = first_difference(saved, settings)
    if shared and not resuming and name is not None:
        raise ClaimError(f"{fmt(settings[name])} differs from the grid another run started in "
                         f"{folder} ({fmt(saved.get(name))} in {path}); start every shard with the "
                         f"same options, or add --resume to take the folder's",
                         option=f"--{name.replace('_', '-')}")
    entry = resume_entry(device)
    changed = {k: saved.get(k) for k in settings if saved.get(k) != settings[k]}
    if changed:  # settings of layers not yet trained, or of how the run executes (RUN_ONLY)
        entry["changed"] = changed  # each one's value before
    write_json(path, {**saved, **settings, "resumed": saved.get("resumed", []) + [entry]})


def fmt(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


@contextmanager
def run_folder(folder: Path, settings: dict, device, resuming: bool):
    """A pretrain or finetune folder, held by this process for the block."""
    with locked(folder, "running in"):
        record(folder, settings, device, resuming)
        yield


def join_grid(folder: Path, settings: dict, device, resuming: bool, write_plan) -> None:
    """An ablation folder: created by the first shard, joined by the others with equal settings."""
    with locked(folder, "joining", wait=True):
        record(folder, settings, device, resuming, shared=True)
        write_plan()


@contextmanager
def cells_to_run(folder: Path, cells: list):
    """Lock each cell for this process; yields (cells locked here, cells another process runs)."""
    parent = Path(folder) / ".locks"  # beside runs/, whose folders are all runs
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create {parent}: {e.strerror}")
    mine, busy = [], []
    with ExitStack() as held:
        for cell in cells:
            lock = try_lock(parent / f"{cell.id}.lock")
            if lock is None:
                busy.append(cell)
            else:
                held.callback(lock.close)
                mine.append(cell)
        yield mine, busy
