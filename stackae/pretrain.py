"""Greedy layer-wise pretraining of K stacks at once: train layer k on the cached codes of the
frozen layers below it, for every stack, then freeze it.

    stackae pretrain --out runs/pretrain/demo        # 784-1000-1000-500 denoising stack on MNIST

A single run is K = 1; `stackae ablate` pretrains every seed of an objective together. The K
stacks share their settings (all but the seed) and nothing else: each has its own data split,
initialisation, batch order and noise. Each stack's folder gets layer1.pt ... layerK.pt as each
layer finishes, then stack.pt (weights, specs, config and per-layer metrics) and summary.json. A
run resumed with --resume reloads finished layers.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .autoencoders import Layer
from .objectives import RBMObjective, corrupt, draw_noise, make_objective
from .checkpoint import layer_checkpoint, load_layer, save, stack_checkpoint
from .config import PretrainConfig
from .interrupt import stop_point
from .runlog import write_json
from .seeding import seed_for
from .train import (Streams, autocast, check_finite, check_lockstep, compiled, make_optimizer,
                    stacked)


@torch.no_grad()
def encode_all(layer: Layer, x: torch.Tensor, precision: str = "float32",
               examples: int = 8192) -> torch.Tensor:
    """Every stack's codes of its own set x (K, n, in), in chunks: computed once per layer, not per
    step, in the run's precision (the next layer would round its bfloat16 inputs anyway)."""
    step = max(1, examples // layer.k)
    with autocast(precision, x.device):
        return torch.cat([layer.encode(c).float() for c in x.split(step, dim=1)], dim=1)


@torch.no_grad()
def mean_recon_loss(layer: Layer, x: torch.Tensor, examples: int = 8192) -> torch.Tensor:
    """(K,): each stack's mean reconstruction loss on its own set x (K, n, in)."""
    step = max(1, examples // layer.k)
    total = sum(layer.recon_loss(layer.decode_raw(layer.encode(c)), layer.prepare(c)) * c.shape[1]
                for c in x.split(step, dim=1))
    return total / max(x.shape[1], 1)


def build_layer(cfgs: list[PretrainConfig], k: int, n_in: int, inputs_in_unit_range: bool,
                device: torch.device) -> Layer:
    """Layer k of every stack, each slice initialised from its own seed, with the decoder output
    and loss chosen from the config and the inputs' range."""
    cfg = cfgs[0]
    rbm = cfg.per_layer("objective", k) == "rbm"
    if rbm:
        gaussian = (cfg.rbm_visible == "gaussian") if k == 0 else not inputs_in_unit_range
        output = "linear" if gaussian else "sigmoid"
    elif cfg.loss == "auto":
        output = "sigmoid" if inputs_in_unit_range else "linear"
    else:
        output = "sigmoid" if cfg.loss == "cross-entropy" else "linear"
    top = cfg.linear_code and k == len(cfg.layers) - 1
    activation = "linear" if top else "sigmoid" if rbm else cfg.activation
    layer = Layer(len(cfgs), n_in, cfg.layers[k], activation, cfg.tied, output,
                  standardize=rbm and output == "linear")
    for i, c in enumerate(cfgs):
        layer.init_slice(i, torch.Generator().manual_seed(seed_for(c.seed, f"init/layer{k + 1}")),
                         rbm)
    return layer.to(device)


def train_layer(cfgs: list[PretrainConfig], k: int, layer: Layer, x: torch.Tensor,
                x_val: torch.Tensor, logs: list) -> list[list[dict]]:
    """The inner loop: batch -> loss -> backward -> step for every stack's layer k at once; losses
    stay on the device until the epoch ends. Returns each stack's per-epoch history."""
    cfg, K, n = cfgs[0], layer.k, x.shape[1]
    objective = make_objective(cfg, k)
    epochs, lr = cfg.per_layer("epochs", k), cfg.per_layer("lr", k)
    if epochs == 0:  # no optimizer: torch's first one costs a second of imports (torch._dynamo)
        return [[] for _ in range(K)]
    opt = make_optimizer(cfg.optimizer, [p for p in layer.parameters() if p.requires_grad], lr,
                         cfg.momentum, cfg.weight_decay)
    seeds = [c.seed for c in cfgs]
    batches = Streams(seeds, f"batches/layer{k + 1}", x.device)
    noise = Streams(seeds, f"noise/layer{k + 1}", x.device)
    rows = torch.arange(K, device=x.device)[:, None]
    amp = autocast(cfg.precision, x.device)
    tag = f"pretrain/layer{k + 1}"
    history = [[] for _ in range(K)]

    def forward(xb, draws):
        """(K,) losses and reconstruction losses of a batch: the step's compiled part."""
        with amp:
            return objective(layer, xb, draws, noise)
    # an RBM's Gibbs chain draws from per-slice generators at every step: not compiled
    step = compiled(forward, cfg.compile and not isinstance(objective, RBMObjective), x.device)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        layer.train()
        total = torch.zeros(K, device=x.device)
        order = batches.orders(n)
        draws = objective.draw(noise, n, x.shape[2])  # the epoch's corruption, drawn at once
        for a in range(0, n, cfg.batch_size):
            idx = order[:, a:a + cfg.batch_size]
            full = idx.shape[1] == cfg.batch_size
            loss, recon = (step if full else forward)(
                x[rows, idx], tuple(d[:, a:a + cfg.batch_size] for d in draws))
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # slice i of every gradient is stack i's own
            opt.step()
            total += recon.detach() * idx.shape[1]
            stop_point()
        if isinstance(objective, RBMObjective):
            objective.copy_decoder(layer)
        layer.eval()
        losses = torch.stack([total / n, mean_recon_loss(layer, x_val)])
        check_finite(losses.sum(0), lambda i: (
            f"pretraining diverged: layer {k + 1}, epoch {epoch}" + (f", seed {seeds[i]}" if K > 1
                                                                     else "")
            + f" has a non-finite loss; layers below it are kept. Try a smaller --lr (now {lr:g})"))
        losses = losses.tolist()  # one host sync per epoch
        dt = time.perf_counter() - t0
        for i in range(K):
            train_loss, val_loss = losses[0][i], losses[1][i]
            history[i].append({"epoch": epoch, "train_recon_loss": train_loss,
                               "val_recon_loss": val_loss, "seconds": dt})
            logs[i].scalars(epoch, {f"{tag}/recon_loss": train_loss,
                                    f"{tag}/val_recon_loss": val_loss,
                                    f"{tag}/epoch_seconds": dt}, stage="pretrain", layer=k + 1)
            logs[i].progress(f"layer {k + 1}/{len(cfg.layers)} epoch {epoch}/{epochs}  recon "
                             f"{train_loss:.4f}  val {val_loss:.4f}  {dt:.1f}s")
    return history


def log_layer_images(log, k: int, layer: Layer, i: int, x_val: torch.Tensor, cfg, image_shape,
                     step: int) -> None:
    """Stack i's filters (first layer), reconstructions (input / corrupted / output) and weight
    histograms, once per layer."""
    tag = f"pretrain/layer{k + 1}"
    log.histogram(f"{tag}/weights", layer.weight[i], step)
    log.histogram(f"{tag}/hidden_bias", layer.bias[i], step)
    if image_shape is None or k != 0:
        return
    from torchvision.utils import make_grid
    h, w = image_shape
    filters = layer.weight[i].detach()[:100].float()
    lo, hi = filters.amin(1, keepdim=True), filters.amax(1, keepdim=True)
    filters = ((filters - lo) / (hi - lo + 1e-8)).reshape(-1, 1, h, w)
    log.image(f"{tag}/filters", make_grid(filters, nrow=10, padding=1, pad_value=1), step)
    with torch.no_grad():
        x = x_val[:16].float()
        xc = x
        if cfg.per_layer("objective", k) == "denoising":
            level = cfg.per_layer("noise", k)
            draws = draw_noise(cfg.corruption, level, Streams([cfg.seed], "figures", x.device),
                               *x.shape)
            xc = corrupt(x, cfg.corruption, level, tuple(d[0] for d in draws))
        out = layer.reconstruct(xc)[i].clamp(0, 1)
    rows = torch.cat([x, xc.clamp(0, 1), out]).reshape(-1, 1, h, w).cpu()
    log.image(f"{tag}/reconstructions", make_grid(rows, nrow=16, padding=1, pad_value=1), step)


def pretrain(cfgs: list[PretrainConfig], datas: list, outs: list[Path], logs: list) -> list[dict]:
    """Train every layer in turn for every stack, freezing each, and write each stack's checkpoint
    into its folder. Finished layers found there (a resumed run) are loaded instead of retrained;
    a layer is trained only for the stacks that lack it."""
    check_lockstep(cfgs, ("seed",), "stacks pretrained")
    cfg, K = cfgs[0], len(cfgs)
    device = datas[0].train_x.device
    x = stacked([d.train_x for d in datas])
    x_val = stacked([d.val_x for d in datas])
    in_unit = True  # the data are scaled to [0, 1]
    layers, metrics = [], [[] for _ in range(K)]
    earlier = [0.0] * K  # seconds of the layers a resumed run reloads (spent by earlier runs)
    t_start = time.perf_counter()
    for k, width in enumerate(cfg.layers):
        paths = [Path(out) / f"layer{k + 1}.pt" for out in outs]
        layer = build_layer(cfgs, k, x.shape[2], in_unit, device)
        todo = [i for i, p in enumerate(paths) if not p.exists()]
        for i in sorted(set(range(K)) - set(todo)):
            ck = load_layer(paths[i], k, x.shape[2], width)
            layer.load_slice(i, ck["state"])
            metrics[i].append(ck["metrics"])
            earlier[i] += ck["metrics"].get("seconds") or 0.0
            logs[i].progress(f"layer {k + 1}: resumed from {paths[i]}")
        if todo:
            t0 = time.perf_counter()
            part = layer if len(todo) == K else layer.subset(todo)
            xs, xs_val = (x, x_val) if len(todo) == K else (x[todo], x_val[todo])
            if part.standardize:  # Gaussian-visible RBM: standardise this layer's inputs
                part.in_mean.copy_(xs.mean(1))
                # a feature that hardly varies in training (an image's border pixels, a unit
                # that rarely fires) is centred, not scaled: dividing by its tiny spread would
                # blow up the values it takes elsewhere; under-scaling does no such harm
                std = xs.std(1)
                part.in_std.copy_(torch.where(std < 0.05 * std.amax(1, keepdim=True), 1.0, std))
            history = train_layer([cfgs[i] for i in todo], k, part, xs, xs_val,
                                  [logs[i] for i in todo])
            val = mean_recon_loss(part.eval(), xs_val).tolist()
            seconds = (time.perf_counter() - t0) / len(todo)
            if part is not layer:
                layer.assign(todo, part)
            for j, i in enumerate(todo):
                rec = {"layer": k + 1, "width": width, "objective": cfg.per_layer("objective", k),
                       "epochs": len(history[j]), "seconds": seconds,
                       "train_recon_loss": history[j][-1]["train_recon_loss"] if history[j] else None,
                       "val_recon_loss": val[j], "history": history[j]}
                metrics[i].append(rec)
                if history[j]:  # an untrained layer has nothing to show
                    log_layer_images(logs[i], k, layer, i, datas[i].val_x, cfgs[i],
                                     datas[i].image_shape, len(history[j]))
                save(paths[i], layer_checkpoint(cfgs[i], k, x.shape[2], layer.slice_state(i), rec))
        layer.requires_grad_(False).eval()  # frozen from here on
        layers.append(layer)
        if k + 1 < len(cfg.layers):  # the top layer's codes feed nothing
            x, x_val = encode_all(layer, x, cfg.precision), encode_all(layer, x_val, cfg.precision)
        in_unit = layer.activation == "sigmoid"
    unrolled = [None] * K
    if cfg.unroll_epochs:
        from .unroll import unroll
        unrolled = unroll(cfgs, layers, datas, logs)
    summaries = []
    for i, (c, d, out) in enumerate(zip(cfgs, datas, outs)):
        entries = [{"width": layer.n_out, "activation": layer.activation,
                    "objective": c.per_layer("objective", k), "output": layer.output,
                    "standardize": layer.standardize, **layer.export(i)}
                   for k, layer in enumerate(layers)]
        save(Path(out) / "stack.pt", stack_checkpoint(c, d, entries, metrics[i], unrolled[i]))
        summary = {"stack": str(Path(out) / "stack.pt"), "input_dim": d.input_dim,
                   "layers": [{k: v for k, v in m.items() if k != "history"} for m in metrics[i]],
                   "unrolled": unrolled[i] and {k: v for k, v in unrolled[i].items()
                                                if k != "history"},
                   "seconds": earlier[i] + (time.perf_counter() - t_start) / K}
        write_json(Path(out) / "summary.json", summary)
        summaries.append(summary)
    return summaries
