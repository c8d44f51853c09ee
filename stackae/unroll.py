"""The unrolled deep autoencoder: after greedy pretraining, encoders and their mirrored decoders
are fine-tuned together on reconstruction of the input (Hinton & Salakhutdinov 2006), for K stacks
at once.

    stackae pretrain --unroll-epochs 10 --out runs/pretrain/unrolled

The layers are updated in place, so the result is still a stack that `finetune` accepts. Each
stack ends at its epoch of lowest validation loss, as `finetune` keeps its epoch of lowest
validation error: the unrolled network overfits the training images if trained long.
TensorBoard gets `unroll/*` curves, reconstructions and a projector view of test-set codes.
"""
from __future__ import annotations

import math
import time

import torch

from .autoencoders import Layer
from .interrupt import stop_point
from .train import Streams, autocast, check_finite, keep_slices, make_optimizer, stacked


def encode(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer.encode(x)
    return x


def reconstruction_loss(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    """(K,): encode through every layer, decode back down; the bottom layer's loss on the input."""
    h = encode(layers, x)
    for layer in reversed(layers[1:]):
        h = layer.decode(h)
    bottom = layers[0]
    return bottom.recon_loss(bottom.decode_raw(h), bottom.prepare(x))


@torch.no_grad()
def mean_loss(layers, x, examples: int = 8192) -> torch.Tensor:
    step = max(1, examples // layers[0].k)
    return sum(reconstruction_loss(layers, c) * c.shape[1] for c in x.split(step, dim=1)) / x.shape[1]


def unroll(cfgs, layers: list[Layer], datas, logs) -> list[dict]:
    cfg, K = cfgs[0], layers[0].k
    for layer in layers:
        layer.requires_grad_(True).train()
    x, x_val = stacked([d.train_x for d in datas]), stacked([d.val_x for d in datas])
    n = x.shape[1]
    params = [p for l in layers for p in l.parameters()]
    opt = make_optimizer(cfg.optimizer, params, cfg.per_layer("lr", 0), cfg.momentum,
                         cfg.weight_decay)
    best = [p.detach().clone() for p in params]  # each stack's parameters at its best epoch
    best_loss = torch.full((K,), math.inf, device=x.device)
    batches = Streams([c.seed for c in cfgs], "batches/unroll", x.device)
    rows = torch.arange(K, device=x.device)[:, None]
    amp = autocast(cfg.precision, x.device)
    history = [[] for _ in range(K)]
    for epoch in range(1, cfg.unroll_epochs + 1):
        t0 = time.perf_counter()
        total = torch.zeros(K, device=x.device)
        order = batches.orders(n)
        for a in range(0, n, cfg.batch_size):
            idx = order[:, a:a + cfg.batch_size]
            with amp:
                loss = reconstruction_loss(layers, x[rows, idx])
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            total += loss.detach() * idx.shape[1]
            stop_point()
        losses = torch.stack([total / n, mean_loss(layers, x_val)])
        check_finite(losses.sum(0), lambda i: (
            f"unrolled fine-tuning diverged at epoch {epoch}" + (f" (seed {cfgs[i].seed})" if K > 1
                                                                 else "")
            + "; the greedy layers are kept in layerK.pt. Try a smaller --lr"))
        better = losses[1] < best_loss
        keep_slices(better, params, best)
        best_loss = torch.where(better, losses[1], best_loss)
        losses = losses.tolist()
        dt = time.perf_counter() - t0
        for i in range(K):
            train_loss, val_loss = losses[0][i], losses[1][i]
            history[i].append({"epoch": epoch, "train_recon_loss": train_loss,
                               "val_recon_loss": val_loss, "seconds": dt})
            logs[i].scalars(epoch, {"unroll/recon_loss": train_loss,
                                    "unroll/val_recon_loss": val_loss}, stage="unroll")
            logs[i].progress(f"unrolled epoch {epoch}/{cfg.unroll_epochs}  recon {train_loss:.4f}  "
                             f"val {val_loss:.4f}  {dt:.1f}s")
    with torch.no_grad():
        for p, q in zip(params, best):
            p.copy_(q)
    for layer in layers:
        layer.requires_grad_(False).eval()
    for i in range(K):
        log_views(layers, i, datas[i], logs[i], cfg.unroll_epochs)
    return [selected(h, cfg.unroll_epochs) for h in history]


def selected(history: list[dict], epochs: int) -> dict:
    """A stack's record: its curves, and the epoch of lowest validation loss that it ends at."""
    best = min(history, key=lambda h: h["val_recon_loss"])  # the first of equals, as kept
    return {"epochs": epochs, "history": history, "best_epoch": best["epoch"],
            "val_recon_loss": best["val_recon_loss"],
            "final_val_recon_loss": history[-1]["val_recon_loss"]}


@torch.no_grad()
def log_views(layers, i: int, data, log, step, n_points: int = 2000) -> None:
    """Stack i's reconstructions through the whole stack, and its test-set top codes in the
    projector."""
    if data.image_shape is None:
        return
    from torchvision.utils import make_grid
    h, w = data.image_shape
    x = data.val_x[:16]
    out = encode(layers, x)
    for layer in reversed(layers):
        out = layer.decode(out)
    rows = torch.cat([x, out[i].clamp(0, 1)]).reshape(-1, 1, h, w).float().cpu()
    log.image("unroll/reconstructions", make_grid(rows, nrow=16, padding=1, pad_value=1), step)
    xt, yt = data.test_x[:n_points], data.test_y[:n_points]
    log.embedding(encode(layers, xt)[i], yt.tolist(), xt.reshape(-1, 1, h, w), "unroll/test_codes")
