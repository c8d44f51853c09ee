"""Supervised fine-tuning of an assembled classifier on a label budget, with model selection on
validation error.

    stackae finetune --init runs/pretrain/demo/stack.pt --out runs/finetune/demo-pre
    stackae finetune --init random --like runs/pretrain/demo/stack.pt --out runs/finetune/demo-rand

result.json reports the test error at the epoch of best validation error, and the curves.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .config import FinetuneConfig
from .data import label_subset
from .pretrain import autocast, make_optimizer
from .runlog import RunError, RunLog
from .seeding import generator


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp, batch: int = 4096):
    """(mean cross-entropy, error rate) over a whole set, read back once."""
    model.eval()
    loss = torch.zeros((), device=x.device)
    wrong = torch.zeros((), device=x.device, dtype=torch.long)
    for xb, yb in zip(x.split(batch), y.split(batch)):
        with amp:
            logits = model(xb)
        loss += F.cross_entropy(logits.float(), yb, reduction="sum")
        wrong += (logits.argmax(1) != yb).sum()
    n = max(len(x), 1)
    return float(loss) / n, int(wrong) / n


def batch_order(n: int, batch_size: int, min_examples: int, g: torch.Generator) -> list:
    """One epoch: seeded permutations of the n examples, repeated until at least `min_examples`
    have been seen (so a 100-label budget still gets a useful number of updates per epoch)."""
    return torch.cat([torch.randperm(n, generator=g) for _ in range(repeats(n, min_examples))]
                     ).split(batch_size)


def repeats(n: int, min_examples: int) -> int:
    return max(1, math.ceil(min_examples / n))


def make_schedule(cfg: FinetuneConfig, opt: torch.optim.Optimizer, n: int):
    """The learning-rate scheduler --lr-schedule asks for, stepped once per batch (constant keeps
    --lr exactly). Cosine reaches 0 after the last batch of epoch `cfg.epochs`."""
    if cfg.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    steps = cfg.epochs * math.ceil(n * repeats(n, cfg.min_epoch_examples) / cfg.batch_size)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))


def finetune(cfg: FinetuneConfig, data, model: nn.Module, log: RunLog, init: str,
             idx: torch.Tensor | None = None) -> dict:
    """Train `model` on the labelled subset `idx` of the training set (drawn here when None)."""
    device = data.train_x.device
    model.to(device)
    if idx is None:
        idx = label_subset(data.train_y, cfg.label_budget, data.n_classes, cfg.seed)
    x, y = data.train_x[idx], data.train_y[idx]
    head = [m for m in model if isinstance(m, nn.Linear)][-1]
    if cfg.freeze_encoder:
        model.requires_grad_(False)
        head.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.momentum, cfg.weight_decay)
    schedule = make_schedule(cfg, opt, len(x))
    g = generator(cfg.seed, "batches")
    amp = autocast(cfg.precision, device)
    best = {"val_error": math.inf, "epoch": 0, "state": None}
    curves = {k: [] for k in ("train_loss", "train_error", "val_loss", "val_error", "test_error")}
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total_loss = torch.zeros((), device=device)
        wrong = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for b in batch_order(len(x), cfg.batch_size, cfg.min_epoch_examples, g):
            b = b.to(device)
            with amp:
                logits = model(x[b])
            loss = F.cross_entropy(logits.float(), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total_loss += loss.detach() * len(b)
            wrong += (logits.detach().argmax(1) != y[b]).sum()
            seen += len(b)
        train_loss, train_error = float(total_loss) / seen, int(wrong) / seen
        if not math.isfinite(train_loss):
            raise RunError(f"fine-tuning diverged: epoch {epoch} has a non-finite loss; "
                           f"try a smaller --lr (now {cfg.lr:g})")
        val_loss, val_error = evaluate(model, data.val_x, data.val_y, amp)
        _, test_error = evaluate(model, data.test_x, data.test_y, amp)
        for k, v in zip(curves, (train_loss, train_error, val_loss, val_error, test_error)):
            curves[k].append(v)
        dt = time.perf_counter() - t0
        log.scalars(epoch, {"finetune/train_loss": train_loss, "finetune/train_error": train_error,
                            "finetune/val_loss": val_loss, "finetune/val_error": val_error,
                            "finetune/test_error": test_error, "finetune/epoch_seconds": dt,
                            "finetune/lr": opt.param_groups[0]["lr"]},
                    stage="finetune")
        log.progress(f"epoch {epoch}/{cfg.epochs}  loss {train_loss:.4f}  train err "
                     f"{train_error:.4f}  val err {val_error:.4f}  test err {test_error:.4f}  {dt:.1f}s")
        if val_error < best["val_error"]:
            best = {"val_error": val_error, "epoch": epoch, "test_error": test_error,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        elif cfg.patience and epoch - best["epoch"] >= cfg.patience:
            log.progress(f"early stop: no better validation error for {cfg.patience} epochs")
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    else:  # zero epochs: the initial network is the result
        _, best["val_error"] = evaluate(model, data.val_x, data.val_y, amp)
        _, best["test_error"] = evaluate(model, data.test_x, data.test_y, amp)
    return {
        "test_error": best["test_error"], "best_epoch": best["epoch"],
        "best_val_error": best["val_error"],
        "final_train_error": curves["train_error"][-1] if curves["train_error"] else None,
        "final_val_error": curves["val_error"][-1] if curves["val_error"] else None,
        "final_test_error": curves["test_error"][-1] if curves["test_error"] else None,
        "epochs_run": len(curves["val_error"]), "labels": len(idx), "init": init,
        "seed": cfg.seed, "seconds": time.perf_counter() - t_start, "curves": curves,
    }
