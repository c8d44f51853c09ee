"""The unrolled deep autoencoder: after greedy pretraining, encoders and their mirrored decoders
are fine-tuned together on reconstruction of the input (Hinton & Salakhutdinov 2006).

    stackae pretrain --unroll-epochs 10 --out runs/pretrain/unrolled

The layers are updated in place, so the result is still a stack that `finetune` accepts.
TensorBoard gets `unroll/*` curves, reconstructions and a projector view of test-set codes.
"""
from __future__ import annotations

import math
import time

import torch

from .autoencoders import Layer
from .pretrain import Diverged, autocast, make_optimizer
from .seeding import generator


def encode(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer.encode(x)
    return x


def reconstruction_loss(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    """Encode through every layer, decode back down; the loss is the bottom layer's on the input."""
    h = encode(layers, x)
    for layer in reversed(layers[1:]):
        h = layer.decode(h)
    bottom = layers[0]
    return bottom.recon_loss(bottom.decode_raw(h), bottom.prepare(x))


@torch.no_grad()
def mean_loss(layers, x, batch=4096) -> float:
    return sum(float(reconstruction_loss(layers, c)) * len(c) for c in x.split(batch)) / len(x)


def unroll(cfg, layers: list[Layer], data, log) -> dict:
    for layer in layers:
        layer.requires_grad_(True).train()
    x, x_val = data.train_x, data.val_x
    opt = make_optimizer(cfg.optimizer, [p for l in layers for p in l.parameters()],
                         cfg.per_layer("lr", 0), cfg.momentum, cfg.weight_decay)
    g = generator(cfg.seed, "batches/unroll")
    amp = autocast(cfg.precision, x.device)
    history = []
    for epoch in range(1, cfg.unroll_epochs + 1):
        t0 = time.perf_counter()
        total = torch.zeros((), device=x.device)
        for idx in torch.randperm(len(x), generator=g).to(x.device).split(cfg.batch_size):
            with amp:
                loss = reconstruction_loss(layers, x[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        train_loss, val_loss = float(total) / len(x), mean_loss(layers, x_val)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise Diverged(f"unrolled fine-tuning diverged at epoch {epoch}; the greedy layers are "
                           f"kept in layerK.pt. Try a smaller --lr")
        dt = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_recon_loss": train_loss, "val_recon_loss": val_loss,
                        "seconds": dt})
        log.scalars(epoch, {"unroll/recon_loss": train_loss, "unroll/val_recon_loss": val_loss},
                    stage="unroll")
        log.progress(f"unrolled epoch {epoch}/{cfg.unroll_epochs}  recon {train_loss:.4f}  "
                     f"val {val_loss:.4f}  {dt:.1f}s")
    for layer in layers:
        layer.requires_grad_(False).eval()
    log_views(layers, data, log, cfg.unroll_epochs)
    return {"epochs": cfg.unroll_epochs, "history": history,
            "val_recon_loss": history[-1]["val_recon_loss"] if history else None}


@torch.no_grad()
def log_views(layers, data, log, step, n_points: int = 2000) -> None:
    """Reconstructions through the whole stack, and the test set's top codes in the projector."""
    if data.image_shape is None:
        return
    from torchvision.utils import make_grid
    h, w = data.image_shape
    x = data.val_x[:16]
    out = encode(layers, x)
    for layer in reversed(layers):
        out = layer.decode(out)
    rows = torch.cat([x, out.clamp(0, 1)]).reshape(-1, 1, h, w).float().cpu()
    log.image("unroll/reconstructions", make_grid(rows, nrow=16, padding=1, pad_value=1), step)
    xt, yt = data.test_x[:n_points], data.test_y[:n_points]
    log.embedding(encode(layers, xt), yt.tolist(), xt.reshape(-1, 1, h, w), "unroll/test_codes")
