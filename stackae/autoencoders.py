"""One layer of the stack and the objectives that train it.

A `Layer` is an encoder (Linear + nonlinearity) with a tied or untied decoder. An objective maps a
batch of the layer's inputs to (loss to minimise, reconstruction loss): plain, denoising (masking,
salt-and-pepper or Gaussian corruption), sparse (KL or L1), contractive (closed-form Jacobian norm)
and RBM (CD-k / persistent CD through the free-energy difference, so one optimiser loop trains all).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


class Layer(nn.Module):
    def __init__(self, n_in: int, n_out: int, activation: str = "sigmoid", tied: bool = True,
                 output: str = "sigmoid", standardize: bool = False):
        super().__init__()
        self.activation, self.tied, self.output, self.standardize = activation, tied, output, standardize
        self.encoder = nn.Linear(n_in, n_out)
        self.decoder_bias = nn.Parameter(torch.zeros(n_in))
        self.decoder_weight = None if tied else nn.Parameter(self.encoder.weight.detach().t().clone())
        # Inputs standardised inside the layer (Gaussian RBMs); folded into the weights on export.
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))

    @property
    def n_in(self) -> int:
        return self.encoder.in_features

    @property
    def n_out(self) -> int:
        return self.encoder.out_features

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean) / self.in_std if self.standardize else x

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return ACT[self.activation](self.encoder(self.prepare(x)))

    def decode_raw(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder output before its nonlinearity, in the layer's (standardised) input space."""
        w = self.encoder.weight.t() if self.tied else self.decoder_weight
        return F.linear(h, w, self.decoder_bias)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder output in the original input space."""
        out = self.decode_raw(h)
        if self.output == "sigmoid":
            return torch.sigmoid(out)
        return out * self.in_std + self.in_mean if self.standardize else out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Clean reconstruction in the original input space (for figures)."""
        return self.decode(self.encode(x))

    def recon_loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-example reconstruction loss (summed over features), averaged over the batch."""
        if self.output == "sigmoid":
            return F.binary_cross_entropy_with_logits(raw, target, reduction="sum") / len(target)
        return F.mse_loss(raw, target, reduction="sum") / len(target)

    def export(self) -> dict:
        """Encoder weights with any input standardisation folded in: what the classifier gets."""
        w, b = self.encoder.weight.detach(), self.encoder.bias.detach()
        if self.standardize:
            b = b - (w * (self.in_mean / self.in_std)).sum(1)
            w = w / self.in_std
        out = {"weight": w.float().cpu().clone(), "bias": b.float().cpu().clone(),
               "decoder_bias": self.decoder_bias.detach().float().cpu().clone()}
        if self.decoder_weight is not None:
            out["decoder_weight"] = self.decoder_weight.detach().float().cpu().clone()
        return out


# ---- corruptions -----------------------------------------------------------------------------

def corrupt(x: torch.Tensor, kind: str, level: float, g: torch.Generator) -> torch.Tensor:
    """Masking zeroes a fraction `level` of inputs (no rescaling); salt-and-pepper sets that fraction
    to 0 or 1 at random; gaussian adds N(0, level^2) noise."""
    if level == 0:
        return x
    if kind == "masking":
        return x * (torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) >= level)
    if kind == "salt-pepper":
        hit = torch.rand(x.shape, generator=g, device=x.device) < level
        salt = (torch.rand(x.shape, generator=g, device=x.device) < 0.5).to(x.dtype)
        return torch.where(hit, salt, x)
    if kind == "gaussian":
        return x + level * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    raise ValueError(f"unknown corruption {kind!r}")


# ---- penalties -------------------------------------------------------------------------------

def kl_sparsity(h: torch.Tensor, rho: float, activation: str) -> torch.Tensor:
    """sum_j KL(rho || mean_batch h_j), for activations in (0, 1) (tanh mapped from (-1, 1))."""
    if activation == "tanh":
        h = (h + 1) / 2
    rho_hat = h.mean(0).clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat)
            + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def contractive_penalty(h: torch.Tensor, weight: torch.Tensor, activation: str) -> torch.Tensor:
    """Mean over the batch of ||dh/dx||_F^2 in closed form: sum_j h'(a_j)^2 * sum_i W_ji^2."""
    if activation == "sigmoid":
        d = h * (1 - h)
    elif activation == "tanh":
        d = 1 - h * h
    else:  # relu: derivative is 1 where active
        d = (h > 0).to(h.dtype)
    return ((d * d) @ (weight * weight).sum(1)).mean()


# ---- objectives ------------------------------------------------------------------------------

class AutoencoderObjective:
    """Reconstruct the clean input from a (possibly corrupted) one, plus an optional penalty."""

    def __init__(self, kind: str, *, noise=0.0, corruption="masking", sparsity_target=0.05,
                 sparsity_weight=1.0, sparsity_penalty="kl", contraction=0.1):
        self.kind, self.noise, self.corruption = kind, noise, corruption
        self.rho, self.beta, self.sparsity_penalty = sparsity_target, sparsity_weight, sparsity_penalty
        self.lam = contraction

    def __call__(self, layer: Layer, x: torch.Tensor, g: torch.Generator):
        x = layer.prepare(x)
        xin = corrupt(x, self.corruption, self.noise, g) if self.kind == "denoising" else x
        h = ACT[layer.activation](layer.pre_activation(xin))
        recon = layer.recon_loss(layer.decode_raw(h), x)
        if self.kind == "sparse":
            pen = (kl_sparsity(h, self.rho, layer.activation) if self.sparsity_penalty == "kl"
                   else h.abs().sum(1).mean())
            return recon + self.beta * pen, recon
        if self.kind == "contractive":
            return recon + self.lam * contractive_penalty(h, layer.encoder.weight, layer.activation), recon
        return recon, recon


class RBMObjective:
    """Contrastive divergence for an RBM whose weights are the layer's encoder (W, hidden bias c)
    and whose visible bias is the decoder bias b. The loss F(data) - F(model sample) has the CD-k
    gradient; with `persistent` the negative chains carry over between batches (PCD)."""

    def __init__(self, k: int = 1, persistent: bool = False):
        self.k, self.persistent, self.chains = k, persistent, None

    @staticmethod
    def free_energy(layer: Layer, v: torch.Tensor) -> torch.Tensor:
        hidden = F.softplus(layer.pre_activation(v)).sum(1)
        if layer.output == "sigmoid":  # Bernoulli visible units
            return -(v @ layer.decoder_bias) - hidden
        return 0.5 * ((v - layer.decoder_bias) ** 2).sum(1) - hidden  # Gaussian, unit variance

    @staticmethod
    def gibbs(layer: Layer, v: torch.Tensor, g: torch.Generator, steps: int) -> torch.Tensor:
        for _ in range(steps):
            ph = torch.sigmoid(layer.pre_activation(v))
            h = (torch.rand(ph.shape, generator=g, device=v.device, dtype=ph.dtype) < ph).to(v.dtype)
            mean_v = layer.decode_raw(h)
            if layer.output == "sigmoid":
                pv = torch.sigmoid(mean_v)
                v = (torch.rand(pv.shape, generator=g, device=v.device, dtype=pv.dtype) < pv).to(v.dtype)
            else:
                v = mean_v + torch.randn(mean_v.shape, generator=g, device=v.device, dtype=v.dtype)
        return v

    def __call__(self, layer: Layer, x: torch.Tensor, g: torch.Generator):
        x = layer.prepare(x)
        with torch.no_grad():
            if self.persistent:
                if self.chains is None or self.chains.shape[1] != x.shape[1]:
                    self.chains = x.detach().clone()
                start = self.chains[: len(x)]
            else:
                start = x
            v_model = self.gibbs(layer, start, g, self.k)
            if self.persistent:
                self.chains[: len(x)] = v_model
        loss = self.free_energy(layer, x).mean() - self.free_energy(layer, v_model).mean()
        with torch.no_grad():  # mean-field reconstruction, comparable with the autoencoders' loss
            recon = layer.recon_loss(layer.decode_raw(torch.sigmoid(layer.pre_activation(x))), x)
        return loss, recon


def make_objective(cfg, k: int):
    """The objective of layer k (0-based) from a PretrainConfig; decided once, before the loop."""
    kind = cfg.per_layer("objective", k)
    if kind == "rbm":
        return RBMObjective(cfg.cd_k, cfg.persistent)
    return AutoencoderObjective(kind, noise=cfg.per_layer("noise", k), corruption=cfg.corruption,
                                sparsity_target=cfg.sparsity_target,
                                sparsity_weight=cfg.sparsity_weight,
                                sparsity_penalty=cfg.sparsity_penalty, contraction=cfg.contraction)
