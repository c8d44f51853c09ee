"""Run folders: `config.json`, `metrics.jsonl`, TensorBoard events, atomic checkpoint/result writes.

One small logger with two sinks: JSON lines for programs, TensorBoard for people. Everything a
command finishes is written aside and renamed into place, so a killed run never leaves half a file.
"""
from __future__ import annotations

import errno
import functools
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import __version__
from .config import to_dict


class RunError(Exception):
    """A failure while running (disk, folder, divergence); the message says what and what to do."""


class Diverged(RunError):
    """A non-finite loss or weights; the message names stage, layer or seed, and epoch."""


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp over `path`; nothing partial is ever at `path`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise RunError(f"cannot write in {path.parent}: {e.strerror}")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; results are for sharing
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_error(path: Path, e: Exception) -> RunError:
    """One line for a failed write; a full disk is said so (torch.save's own text would not)."""
    why = getattr(e, "strerror", None) or str(e).strip().splitlines()[0][:160]
    try:
        full = getattr(e, "errno", None) == errno.ENOSPC or shutil.disk_usage(
            Path(path).parent).free < 1 << 20
    except OSError:
        full = False
    return RunError(f"could not write {path}: {why}" + (" (disk full: free some space, then rerun "
                                                        "with --resume)" if full else ""))


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def save_checkpoint(path: Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


@functools.lru_cache(maxsize=None)
def code_version() -> tuple[str | None, bool | None]:
    """The git commit of the stackae code this process loaded, and whether the package had
    uncommitted changes; read once, at the first run, so that a long grid records the code it is
    running even if the checkout moves on meanwhile."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--", ".")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return commit, dirty


def provenance(device: torch.device) -> dict:
    """What produced a run, recorded beside its settings."""
    commit, dirty = code_version()
    return {"stackae": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "git_commit": commit, "git_dirty": dirty, "argv": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


LOCK_NAME = ".stackae.lock"  # held by the process running in a folder (claims.py)
RESUME_NAME = "resume.pt"  # an unfinished fine-tuning's resume point (checkpoint.py)


def read_config(path: Path) -> dict | None:
    """A run's config.json as written, None when absent or unreadable."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def write_config(folder: Path, config, device) -> None:
    """config.json: the settings, with the provenance of the run that first wrote it; a resumed run
    keeps that provenance (claims.py adds the resume to its `resumed` list)."""
    path = Path(folder) / "config.json"
    settings = to_dict(config)
    old = read_config(path)
    if old is not None and "provenance" in old:
        if all(old.get(k) == v for k, v in settings.items()):
            return
        record = {**old, **settings}
    else:
        record = {**settings, "provenance": provenance(device)}
    write_json(path, record)


def finished_layers(folder: Path) -> set[int]:
    """The pretraining layers whose checkpoint is in the folder (1-based)."""
    return {int(m.group(1)) for p in Path(folder).glob("layer*.pt")
            if (m := re.fullmatch(r"layer(\d+)\.pt", p.name))}


def kept_on_resume(folder: Path, epoch: int = 0):
    """What of a resumed run's logs still holds: the records of its finished pretraining layers,
    and of its fine-tuning epochs up to `epoch` (where its resume point stands). Everything else
    (the unfinished layer, later epochs, the unrolled stage) is redone."""
    done = finished_layers(folder)

    def keep(stage, layer, step) -> bool:
        return (stage == "pretrain" and layer in done) or (
            stage == "finetune" and isinstance(step, int) and step <= epoch)
    return keep


def prepare_folder(out: Path, resume: bool) -> bool:
    """Make sure `out` can be used; True when resuming an existing run there."""
    out = Path(out)
    if out.exists() and not resume:
        raise RunError(f"output folder {out} already exists; pass --resume to continue it, "
                       f"or choose another --out")
    if resume and not (out / "config.json").exists():
        if out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
            raise RunError(f"--resume: {out} has no config.json, so it is not a stackae run")
        return False
    return resume


class RunLog:
    """metrics.jsonl + TensorBoard in one run folder. Tags use fixed prefixes
    (`pretrain/layer2/recon_loss`, `finetune/val_error`). A resumed fine-tuning keeps the records
    of its first `resumed_after` epochs."""

    def __init__(self, folder: Path, config, device: torch.device, quiet: bool = False,
                 tensorboard: bool = True, resumed_after: int = 0):
        self.folder = Path(folder)
        self.quiet = quiet
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create output folder {self.folder}: {e.strerror}")
        write_config(self.folder, config, device)
        keep = kept_on_resume(self.folder, resumed_after)
        self._metrics_path = self.folder / "metrics.jsonl"
        prune_metrics(self._metrics_path, keep)
        try:
            self._metrics = open(self._metrics_path, "a")
        except OSError as e:
            raise write_error(self._metrics_path, e)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            old = sorted(self.folder.glob("events.out.tfevents.*"))
            self._tb = self._board(SummaryWriter, str(self.folder))
            if old:
                self._board(carry_events, old, self._tb, keep)

    def _board(self, fn, *args, **kwargs):
        """A TensorBoard call; its writer thread reports a full disk as a bare OSError."""
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            raise write_error(self.folder / "events.out.tfevents", e)

    def scalars(self, step: int, values: dict, **context) -> None:
        """Log scalars (tag -> value) at a step to both sinks."""
        rec = {"step": step, **context, **{k: float(v) for k, v in values.items()},
               "time": round(time.time(), 3)}
        try:
            self._metrics.write(json.dumps(rec) + "\n")
            self._metrics.flush()
        except OSError as e:
            raise write_error(self._metrics_path, e)
        if self._tb is not None:
            for tag, v in values.items():
                if math.isfinite(float(v)):
                    self._board(self._tb.add_scalar, tag, float(v), step)

    def image(self, tag: str, img: torch.Tensor, step: int) -> None:
        if self._tb is not None:
            self._board(self._tb.add_image, tag, img.float().cpu(), step)

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        values = values.detach().float().cpu()
        try:
            if not torch.isfinite(values).all():
                raise ValueError(tag)
            if self._tb is not None:
                self._board(self._tb.add_histogram, tag, values, step)
        except ValueError:  # weights that blew up while the loss stayed finite: no bins hold them
            where = re.sub(r"^pretrain/layer(\d+)/", r"layer \1 ", tag).replace("_", " ")
            raise Diverged(f"pretraining diverged: {where} blew up (largest magnitude "
                           f"{values.abs().max().item():.3g}) although the loss stayed finite; "
                           f"layers below it are kept. Try a smaller --lr")

    def embedding(self, codes: torch.Tensor, labels, images: torch.Tensor, tag: str) -> None:
        if self._tb is not None:
            # a resumed run that redoes its stage replaces the embedding written before (where
            # SummaryWriter would keep the old files and print a warning on stdout)
            shutil.rmtree(self.folder / "00000" / tag.replace("%", "%25").replace("/", "%2f"),
                          ignore_errors=True)
            self._board(self._tb.add_embedding, codes.float().cpu(), metadata=labels,
                        label_img=images.cpu(), tag=tag)

    def hparams(self, hparams: dict, metrics: dict) -> None:
        """The hyperparameter dashboard entry, written into this run's own folder (SummaryWriter's
        add_hparams would create a timestamped subfolder instead)."""
        if self._tb is None:
            return
        from torch.utils.tensorboard.summary import hparams as hp_summary
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                 for k, v in hparams.items()}
        exp, ssi, sei = hp_summary(clean, metrics)
        w = self._tb._get_file_writer()
        for s in (exp, ssi, sei):
            self._board(w.add_summary, s)
        for k, v in metrics.items():
            self._board(self._tb.add_scalar, k, v, 0)

    def progress(self, line: str) -> None:
        if not self.quiet:
            from .progress import say  # a live bar when one is open (progress.py)
            say(line)

    def close(self) -> None:
        try:
            self._metrics.close()
        except OSError as e:
            raise write_error(self._metrics_path, e)
        finally:
            if self._tb is not None:
                self._board(self._tb.close)


def prune_metrics(path: Path, keep) -> None:
    """Drop the records a resumed run will write again, so each epoch appears once."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the half line of a killed run
        if isinstance(rec, dict) and keep(rec.get("stage"), rec.get("layer"), rec.get("step")):
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(l + "\n" for l in kept)))


def carry_events(old: list[Path], writer, keep) -> None:
    """Copy the still-valid events of a resumed run's event files into the new writer's one file,
    then delete the old files: TensorBoard shows one run, with no epoch twice."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    file_writer = writer._get_file_writer()
    for path in old:
        for event in EventFileLoader(str(path)).Load():
            tags = [v.tag for v in event.summary.value]
            if tags and all(keep(*tag_stage(t), event.step) for t in tags):
                file_writer.add_event(event)
    file_writer.flush()
    for path in old:
        path.unlink(missing_ok=True)


def tag_stage(tag: str) -> tuple[str | None, int | None]:
    """(stage, layer) of a TensorBoard tag: pretrain/layer2/... is ("pretrain", 2), finetune/...
    is ("finetune", None); others (the hparams dashboard) belong to no stage."""
    if m := re.match(r"pretrain/layer(\d+)/", tag):
        return "pretrain", int(m.group(1))
    return ("finetune" if tag.startswith("finetune/") else None), None


def copy_run_folder(source: Path, target: Path, replaced: dict | None = None) -> None:
    """Copy a finished run folder to `target`, whole or not at all: a copy cut off leaves a
    hidden .copying folder, never a target without its checkpoint or result. `replaced` gives
    JSON files of the copy new contents ({"result.json": {...}}); the copy records where it came
    from (copied.json), for reports."""
    partial = target.with_name(f".{target.name}.copying")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, partial, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(RESUME_NAME))  # one a kill left behind
    for name, obj in {**(replaced or {}), "copied.json": {"from": str(source)}}.items():
        write_json(partial / name, obj)
    partial.rename(target)
