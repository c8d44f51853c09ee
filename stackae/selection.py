"""Model selection of one fine-tuned network: its curves per epoch, the epoch of best validation
error (whose weights are the result: finetune.py reads their test error once, at the end), early
stopping by patience, and whether a tuning pruned it.
The K-network loop (finetune.py) keeps one Selection per network, so each is selected on its own
validation error whatever it trains beside; its state travels in the resume point (resume.py).
"""
from __future__ import annotations

import math

CURVES = ("train_loss", "train_error", "val_loss", "val_error")  # no test error: read once


class Selection:
    """One network's bookkeeping: its curves, the epoch of best validation error (whose weights
    are the result), patience, and whether it was pruned. The K-network loop keeps one per
    network."""

    def __init__(self, patience: int):
        self.patience = patience
        self.curves = {k: [] for k in CURVES}
        self.best = {"val_error": math.inf, "epoch": 0}
        self.stopped = self.pruned = False

    def update(self, epoch: int, values: dict) -> bool:
        """Record an epoch; True when it is the best so far. Sets `stopped` when patience ran out."""
        for k in CURVES:
            self.curves[k].append(values[k])
        if values["val_error"] < self.best["val_error"]:
            self.best = {"val_error": values["val_error"], "epoch": epoch}
            return True
        if self.patience and epoch - self.best["epoch"] >= self.patience:
            self.stopped = True
        return False

    def state(self) -> dict:
        return {"curves": self.curves, "best": self.best, "stopped": self.stopped,
                "pruned": self.pruned}

    def set_state(self, state: dict) -> None:
        # points saved before the test set was read once only also hold test errors: dropped
        self.curves = {k: state["curves"][k] for k in CURVES}
        self.best = {k: state["best"][k] for k in ("val_error", "epoch")}
        self.stopped = state["stopped"]
        self.pruned = state.get("pruned", False)  # points saved before pruning existed

    def result(self, test_error: float | None, **extra) -> dict:
        """The result record, given the test error of the selected weights (None: not read)."""
        last = {k: (v[-1] if v else None) for k, v in self.curves.items()}
        return {"test_error": test_error, "best_epoch": self.best["epoch"],
                "best_val_error": self.best["val_error"],
                "final_train_error": last["train_error"], "final_val_error": last["val_error"],
                "epochs_run": len(self.curves["val_error"]),
                **({"pruned": True} if self.pruned else {}), **extra, "curves": self.curves}
