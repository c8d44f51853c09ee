"""A grid's results.jsonl (and a tuning's trials.jsonl): one JSON line per finished cell or trial,
each appended with one write so that lines of concurrent shards never interleave. The report reads
them back (report_checks.read_records), the last line of a cell winning."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .grid import Cell
from .runlog import RunError


def append_result(path: Path, record: dict) -> None:
    """One line, one os.write on an O_APPEND file: lines of concurrent shards never interleave."""
    line = (json.dumps(record) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as e:
        raise RunError(f"could not append to {path}: {e.strerror}")
    if written != len(line):
        raise RunError(f"short write to {path} ({written} of {len(line)} bytes); disk full?")


def recorded_ids(out: Path) -> set[str]:
    path = out / "results.jsonl"
    ids = set()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                ids.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line another process is still writing
    return ids


def record(cell: Cell, result: dict, folder: str | None = None) -> dict:
    """The results.jsonl line of a finished cell (everything the report's tables need); `folder`
    is the cell's folder relative to the results file (default runs/finetune/<id>)."""
    keys = ("labels", "test_error", "best_val_error", "best_epoch", "epochs_run", "seconds")
    return {"id": cell.id, "init": cell.init,
            "kind": "pretrained" if cell.pretrain else "random", "depth": cell.depth,
            "budget": cell.budget, "seed": cell.seed, **{k: result[k] for k in keys},
            "pretrain": cell.pretrain, "folder": folder or f"runs/finetune/{cell.id}"}
