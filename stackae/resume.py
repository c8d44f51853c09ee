"""Resume points of a fine-tuning loop: every RESUME_SECONDS, at the end of an epoch, each of its
K networks saves where it stands (resume.pt in its own folder: checkpoint.resume_checkpoint), and
a killed run's loop is restored from them, with any K, to end as it would have uninterrupted.
What a network's point holds is its slice of the loop: weights, the best epoch's weights,
optimizer buffers, random streams and model selection, with the schedule's step count.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import resume_checkpoint, save
from .runlog import RESUME_NAME, RunError
from .train import load_slices, optimizer_slice

RESUME_SECONDS = 300.0  # how often, at an epoch's end, a fine-tuning saves its resume points


@dataclass
class Loop:
    """What of a K-network fine-tuning loop a resume point saves and restores."""
    net: torch.nn.Module  # network.Stacked
    best: list            # the best epoch's weights, like net.parameters()
    opt: torch.optim.Optimizer
    schedule: object      # the learning-rate scheduler, stepped once per batch
    streams: dict         # name -> train.Streams, or None where the loop draws none
    sel: list             # selection.Selection, one per network

    def state(self, k: int) -> dict:
        """Network k's part of the loop after an epoch."""
        return {"params": [p.detach()[k].cpu().clone() for p in self.net.parameters()],
                "best": [b[k].cpu().clone() for b in self.best],
                "optimizer": optimizer_slice(self.opt, k),
                "streams": {name: s.state(k) for name, s in self.streams.items()
                            if s is not None},
                "selection": self.sel[k].state(), "steps": self.schedule.last_epoch}

    @torch.no_grad()
    def restore(self, points: list[dict]) -> None:
        """Load K networks' points (after the same epoch) into the loop. The schedule is stepped
        to where it stood, as it was then, so its rates are the same floats."""
        for j, p in enumerate(self.net.parameters()):
            p.copy_(torch.stack([r["params"][j] for r in points]))
            self.best[j].copy_(torch.stack([r["best"][j] for r in points]))
        if points[0]["optimizer"]:
            load_slices(self.opt, [r["optimizer"] for r in points])
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": a replay
            warnings.simplefilter("ignore")
            for _ in range(points[0]["steps"]):
                self.schedule.step()
        for k, r in enumerate(points):
            for name, s in self.streams.items():
                if s is not None and name in r["streams"]:  # else saved by a loop that drew none
                    s.set_state(k, r["streams"][name])  # from it: a fresh one is where it stands
            self.sel[k].set_state(r["selection"])


def save_points(loop: Loop, folders: list, cfgs: list, device, epoch: int,
                seconds: list[float]) -> bool:
    """Each network's resume point after `epoch` into its folder (`seconds`: each one's training
    time so far). False when a save failed (a full disk): said once, and the run goes on without
    resume points, which are a convenience."""
    try:
        for k, (folder, cfg) in enumerate(zip(folders, cfgs)):
            save(Path(folder) / RESUME_NAME, resume_checkpoint(
                cfg, device, epoch, {**loop.state(k), "seconds": seconds[k]}))
    except RunError as e:
        print(f"warning: {e}; the run goes on without resume points", file=sys.stderr, flush=True)
        return False
    return True
