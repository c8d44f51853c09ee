"""Greedy layer-wise pretraining: train layer k on the cached codes of the frozen layers below it.

    stackae pretrain --out runs/pretrain/demo        # 784-1000-1000-500 denoising stack on MNIST

Writes layer1.pt ... layerK.pt as each layer finishes, then stack.pt (weights, specs, config and
per-layer metrics) and summary.json. A run resumed with --resume reloads finished layers.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from .autoencoders import Layer, make_objective
from .checkpoint import load_layer, stack_checkpoint
from .config import PretrainConfig, to_dict
from .runlog import RunError, RunLog, save_checkpoint, write_json
from .seeding import generator, seed_for


class Diverged(RunError):
    pass


def autocast(precision: str, device: torch.device):
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def encode_all(layer: Layer, x: torch.Tensor, precision: str = "float32",
               batch: int = 4096) -> torch.Tensor:
    """The layer's codes for a whole set, in chunks: computed once per layer, not per step, in the
    run's precision (the next layer would round its bfloat16 inputs anyway), stored as float32."""
    with autocast(precision, x.device):
        return torch.cat([layer.encode(c).float() for c in x.split(batch)]) if len(x) else x


@torch.no_grad()
def mean_recon_loss(layer: Layer, x: torch.Tensor, batch: int = 4096) -> float:
    total = sum(layer.recon_loss(layer.decode_raw(layer.encode(c)), layer.prepare(c)) * len(c)
                for c in x.split(batch))
    return float(total) / max(len(x), 1)


def build_layer(cfg: PretrainConfig, k: int, n_in: int, inputs_in_unit_range: bool,
                device: torch.device) -> Layer:
    """Layer k with its decoder output and loss chosen from the config and the inputs' range."""
    rbm = cfg.per_layer("objective", k) == "rbm"
    if rbm:
        gaussian = (cfg.rbm_visible == "gaussian") if k == 0 else not inputs_in_unit_range
        output = "linear" if gaussian else "sigmoid"
    elif cfg.loss == "auto":
        output = "sigmoid" if inputs_in_unit_range else "linear"
    else:
        output = "sigmoid" if cfg.loss == "cross-entropy" else "linear"
    torch.manual_seed(seed_for(cfg.seed, f"init/layer{k + 1}"))
    layer = Layer(n_in, cfg.layers[k], "sigmoid" if rbm else cfg.activation, cfg.tied, output,
                  standardize=rbm and output == "linear")
    if rbm:  # the classic RBM start: small Gaussian weights, zero biases
        torch.nn.init.normal_(layer.encoder.weight, std=0.01)
        torch.nn.init.zeros_(layer.encoder.bias)
    return layer.to(device)


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float):
    """Adam or SGD with momentum, fused into one kernel per step (measured in scripts/bench.py:
    the per-parameter loop costs ~15% of a 784x1000 layer's step on CPU)."""
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)


def train_layer(cfg: PretrainConfig, k: int, layer: Layer, x: torch.Tensor, x_val: torch.Tensor,
                log: RunLog) -> list[dict]:
    """The inner loop: batch -> loss -> backward -> step; losses stay on the device until epoch end."""
    objective = make_objective(cfg, k)
    epochs, lr = cfg.per_layer("epochs", k), cfg.per_layer("lr", k)
    opt = make_optimizer(cfg.optimizer, [p for p in layer.parameters() if p.requires_grad], lr,
                         cfg.momentum, cfg.weight_decay)
    g_batches = generator(cfg.seed, f"batches/layer{k + 1}")
    g_noise = generator(cfg.seed, f"noise/layer{k + 1}", x.device)
    amp = autocast(cfg.precision, x.device)
    tag = f"pretrain/layer{k + 1}"
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        layer.train()
        total = torch.zeros((), device=x.device)
        perm = torch.randperm(len(x), generator=g_batches).to(x.device)
        for idx in perm.split(cfg.batch_size):
            with amp:
                loss, recon = objective(layer, x[idx], g_noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += recon.detach() * len(idx)
        train_loss = float(total) / len(x)  # one host sync per epoch
        layer.eval()
        val_loss = mean_recon_loss(layer, x_val)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise Diverged(f"pretraining diverged: layer {k + 1}, epoch {epoch} has a non-finite "
                           f"loss; layers below it are kept. Try a smaller --lr (now {lr:g})")
        dt = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_recon_loss": train_loss, "val_recon_loss": val_loss,
               "seconds": dt}
        history.append(rec)
        log.scalars(epoch, {f"{tag}/recon_loss": train_loss, f"{tag}/val_recon_loss": val_loss,
                            f"{tag}/epoch_seconds": dt}, stage="pretrain", layer=k + 1)
        log.progress(f"layer {k + 1}/{len(cfg.layers)} epoch {epoch}/{epochs}  recon "
                     f"{train_loss:.4f}  val {val_loss:.4f}  {dt:.1f}s")
    return history


def log_layer_images(log: RunLog, k: int, layer: Layer, x_val: torch.Tensor, cfg, image_shape,
                     step: int) -> None:
    """Filters (first layer), reconstructions (input / corrupted / output) and weight histograms."""
    from torchvision.utils import make_grid
    tag = f"pretrain/layer{k + 1}"
    log.histogram(f"{tag}/weights", layer.encoder.weight, step)
    log.histogram(f"{tag}/hidden_bias", layer.encoder.bias, step)
    if image_shape is None or k != 0:
        return
    h, w = image_shape
    filters = layer.encoder.weight.detach()[:100].float()
    lo, hi = filters.amin(1, keepdim=True), filters.amax(1, keepdim=True)
    filters = ((filters - lo) / (hi - lo + 1e-8)).reshape(-1, 1, h, w)
    log.image(f"{tag}/filters", make_grid(filters, nrow=10, padding=1, pad_value=1), step)
    with torch.no_grad():
        x = x_val[:16].float()
        kind = cfg.per_layer("objective", k)
        from .autoencoders import corrupt
        xc = (corrupt(x, cfg.corruption, cfg.per_layer("noise", k), generator(cfg.seed, "figures",
                                                                                x.device))
              if kind == "denoising" else x)
        out = layer.reconstruct(xc).clamp(0, 1)
    rows = torch.cat([x, xc.clamp(0, 1), out]).reshape(-1, 1, h, w).cpu()
    log.image(f"{tag}/reconstructions", make_grid(rows, nrow=16, padding=1, pad_value=1), step)


def pretrain(cfg: PretrainConfig, data, out: Path, log: RunLog) -> dict:
    """Train every layer in turn, freezing each, and write the stack checkpoint. Finished layers
    found in `out` (a resumed run) are loaded instead of retrained."""
    device = data.train_x.device
    x, x_val = data.train_x, data.val_x
    in_unit = True  # the data are scaled to [0, 1]
    layers, metrics = [], []
    t_start = time.perf_counter()
    for k, width in enumerate(cfg.layers):
        path = out / f"layer{k + 1}.pt"
        layer = build_layer(cfg, k, x.shape[1], in_unit, device)
        if path.exists():
            layer.load_state_dict(load_layer(path, k, x.shape[1], width))
            rec = torch.load(path, weights_only=True)["metrics"]
            log.progress(f"layer {k + 1}: resumed from {path}")
        else:
            t0 = time.perf_counter()
            if layer.standardize:  # Gaussian-visible RBM: standardise this layer's inputs
                layer.in_mean.copy_(x.mean(0))
                layer.in_std.copy_(x.std(0).clamp_min(1e-3))
            history = train_layer(cfg, k, layer, x, x_val, log)
            rec = {"layer": k + 1, "width": width, "objective": cfg.per_layer("objective", k),
                   "epochs": len(history), "seconds": time.perf_counter() - t0,
                   "train_recon_loss": history[-1]["train_recon_loss"] if history else None,
                   "val_recon_loss": mean_recon_loss(layer.eval(), x_val), "history": history}
            log_layer_images(log, k, layer, x_val, cfg, data.image_shape, len(history))
            save_checkpoint(path, {"format": "stackae-layer", "index": k + 1, "input_dim": x.shape[1],
                                   "state": {n: t.detach().cpu() for n, t in
                                             layer.state_dict().items()},
                                   "metrics": rec, "config": to_dict(cfg)})
        layer.requires_grad_(False).eval()  # frozen from here on
        layers.append(layer)
        metrics.append(rec)
        if k + 1 < len(cfg.layers):  # the top layer's codes feed nothing
            x, x_val = encode_all(layer, x, cfg.precision), encode_all(layer, x_val, cfg.precision)
        in_unit = layer.activation == "sigmoid"
    unrolled = None
    if cfg.unroll_epochs:
        from .unroll import unroll
        unrolled = unroll(cfg, layers, data, log)
    stack = stack_checkpoint(cfg, data, layers, metrics, unrolled)
    save_checkpoint(out / "stack.pt", stack)
    summary = {"stack": str(out / "stack.pt"), "input_dim": data.input_dim,
               "layers": [{k: v for k, v in m.items() if k != "history"} for m in metrics],
               "unrolled": unrolled and {k: v for k, v in unrolled.items() if k != "history"},
               "seconds": time.perf_counter() - t_start}
    write_json(out / "summary.json", summary)
    return summary
