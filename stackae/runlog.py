"""Run folders: `config.json`, `metrics.jsonl`, TensorBoard events, atomic checkpoint/result writes.

One small logger with two sinks: JSON lines for programs, TensorBoard for people. Everything a
command finishes is written aside and renamed into place, so a killed run never leaves half a file.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RunError(f"could not write {path}: {e.strerror or e}"
                       + (" (disk full)" if getattr(e, "errno", None) == 28 else ""))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def prepare_folder(out: Path, resume: bool) -> bool:
    """Make sure `out` can be used; True when resuming an existing run there."""
    out = Path(out)
    if out.exists() and not resume:
        raise RunError(f"output folder {out} already exists; pass --resume to continue it, "
                       f"or choose another --out")
    if resume and not (out / "config.json").exists():
        if out.exists() and any(out.iterdir()):
            raise RunError(f"--resume: {out} has no config.json, so it is not a stackae run")
        return False
    return resume


class RunLog:
    """metrics.jsonl + TensorBoard in one run folder. Tags use fixed prefixes
    (`pretrain/layer2/recon_loss`, `finetune/val_error`)."""

    def __init__(self, folder: Path, config, device: torch.device, quiet: bool = False,
                 tensorboard: bool = True):
        self.folder = Path(folder)
        self.quiet = quiet
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot create output folder {self.folder}: {e.strerror}")
        cfg = to_dict(config)
        cfg["provenance"] = provenance(device)
        write_json(self.folder / "config.json", cfg)
        self._metrics = open(self.folder / "metrics.jsonl", "a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(self.folder))

    def scalars(self, step: int, values: dict, **context) -> None:
        """Log scalars (tag -> value) at a step to both sinks."""
        rec = {"step": step, **context, **{k: float(v) for k, v in values.items()},
               "time": round(time.time(), 3)}
        self._metrics.write(json.dumps(rec) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for tag, v in values.items():
                if math.isfinite(float(v)):
                    self._tb.add_scalar(tag, float(v), step)

    def image(self, tag: str, img: torch.Tensor, step: int) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, img.float().cpu(), step)

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        if self._tb is not None:
            self._tb.add_histogram(tag, values.detach().float().cpu(), step)

    def embedding(self, codes: torch.Tensor, labels, images: torch.Tensor, tag: str) -> None:
        if self._tb is not None:
            self._tb.add_embedding(codes.float().cpu(), metadata=labels, label_img=images.cpu(),
                                   tag=tag)

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
            w.add_summary(s)
        for k, v in metrics.items():
            self._tb.add_scalar(k, v, 0)

    def progress(self, line: str) -> None:
        if not self.quiet:
            from .progress import say  # a live bar when one is open (progress.py)
            say(line)

    def close(self) -> None:
        self._metrics.close()
        if self._tb is not None:
            self._tb.close()
