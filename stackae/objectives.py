"""The pretraining objectives that train a `Layer` of K stacks.

An objective maps a batch to per-slice (loss to minimise, reconstruction loss), each of shape (K,):
plain, denoising (masking, salt-and-pepper or Gaussian corruption), sparse (KL or L1), contractive
(closed-form Jacobian norm) and RBM (CD-k / persistent CD through the free-energy difference, so one
optimiser loop trains all). Summing the K losses gives every slice its own gradient, so K slices
train as K separate runs would.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .autoencoders import ACT, Layer, linear, wide


# ---- corruptions -----------------------------------------------------------------------------

def draw_noise(kind: str, level: float, streams, n: int, d: int) -> tuple:
    """An epoch's corruption for every slice, drawn at once on the device: (K, n, d) tensors that
    `corrupt` applies batch by batch (row j is the example at position j of the epoch)."""
    if level == 0:
        return ()
    if kind == "masking":
        return (streams.rand(n, d) >= level,)
    if kind == "salt-pepper":
        return streams.rand(n, d) < level, streams.rand(n, d) < 0.5
    if kind == "gaussian":
        return (streams.randn(n, d),)
    raise ValueError(f"unknown corruption {kind!r}")


def corrupt(x: torch.Tensor, kind: str, level: float, noise: tuple) -> torch.Tensor:
    """Masking zeroes a fraction `level` of inputs (no rescaling); salt-and-pepper sets that fraction
    to 0 or 1 at random; gaussian adds N(0, level^2) noise."""
    if not noise:
        return x
    if kind == "masking":
        return x * noise[0]
    if kind == "salt-pepper":
        return torch.where(noise[0], noise[1].to(x.dtype), x)
    return x + level * noise[0].to(x.dtype)


# ---- penalties -------------------------------------------------------------------------------

def kl_sparsity(h: torch.Tensor, rho: float, activation: str) -> torch.Tensor:
    """(K,): sum_j KL(rho || mean_batch h_j), for activations in (0, 1) (tanh mapped from (-1, 1))."""
    if activation == "tanh":
        h = (h + 1) / 2
    rho_hat = wide(h).mean(1).clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat)
            + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum(-1)


def contractive_penalty(h: torch.Tensor, weight: torch.Tensor, activation: str) -> torch.Tensor:
    """(K,): mean over the batch of ||dh/dx||_F^2 in closed form: sum_j h'(a_j)^2 sum_i W_ji^2."""
    if activation == "sigmoid":
        d = h * (1 - h)
    elif activation == "tanh":
        d = 1 - h * h
    elif activation == "linear":
        d = torch.ones_like(h)
    else:  # relu: derivative is 1 where active
        d = (h > 0).to(h.dtype)
    return (wide(d * d) * (weight * weight).sum(2).unsqueeze(1)).sum(-1).mean(-1)


# ---- objectives ------------------------------------------------------------------------------

class AutoencoderObjective:
    """Reconstruct the clean input from a (possibly corrupted) one, plus an optional penalty."""

    def __init__(self, kind: str, *, noise=0.0, corruption="masking", sparsity_target=0.05,
                 sparsity_weight=1.0, sparsity_penalty="kl", contraction=0.1):
        self.kind, self.noise, self.corruption = kind, noise, corruption
        self.rho, self.beta, self.sparsity_penalty = sparsity_target, sparsity_weight, sparsity_penalty
        self.lam = contraction

    def draw(self, streams, n: int, d: int) -> tuple:
        """The epoch's random draws (corruption of a denoising layer; nothing otherwise)."""
        if self.kind != "denoising":
            return ()
        return draw_noise(self.corruption, self.noise, streams, n, d)

    def __call__(self, layer: Layer, x: torch.Tensor, noise: tuple, streams=None):
        x = layer.prepare(x)
        xin = corrupt(x, self.corruption, self.noise, noise)
        h = ACT[layer.activation](layer.pre_activation(xin))
        recon = layer.recon_loss(layer.decode_raw(h), x)
        if self.kind == "sparse":
            pen = (kl_sparsity(h, self.rho, layer.activation) if self.sparsity_penalty == "kl"
                   else wide(h).abs().sum(-1).mean(-1))
            return recon + self.beta * pen, recon
        if self.kind == "contractive":
            return recon + self.lam * contractive_penalty(h, layer.weight, layer.activation), recon
        return recon, recon


class RBMObjective:
    """Contrastive divergence for RBMs whose weights are the layer's encoder (W, hidden bias c)
    and whose visible bias is the decoder bias b. The loss F(data) - F(model sample) has the CD-k
    gradient; with `persistent` the negative chains carry over between batches (PCD). Gibbs
    sampling depends on the chain's state, so its draws are made step by step, per slice.

    Hidden units are binary, or for a layer of activation "linear" Gaussian with unit variance
    (h = Wv + c + N(0, 1): the linear code of Hinton & Salakhutdinov 2006). CD trains one matrix,
    so the down pass is always W^T; an untied layer's own decoder is kept a copy of it
    (`copy_decoder`, after every epoch), which only the unrolled autoencoder trains apart."""

    def __init__(self, k: int = 1, persistent: bool = False):
        self.k, self.persistent, self.chains = k, persistent, None

    def draw(self, streams, n: int, d: int) -> tuple:
        return ()

    @staticmethod
    def down(layer: Layer, h: torch.Tensor) -> torch.Tensor:
        """The visible units' input from hidden states, through the RBM's own W^T."""
        return linear(h, layer.weight.transpose(1, 2), layer.decoder_bias)

    @staticmethod
    def free_energy(layer: Layer, v: torch.Tensor) -> torch.Tensor:
        """(K, B)."""
        a = layer.pre_activation(v)
        hidden = (0.5 * a * a if layer.activation == "linear" else F.softplus(a)).sum(-1)
        if layer.output == "sigmoid":  # Bernoulli visible units
            return -(v * layer.decoder_bias.unsqueeze(1)).sum(-1) - hidden
        return 0.5 * ((v - layer.decoder_bias.unsqueeze(1)) ** 2).sum(-1) - hidden  # Gaussian

    @classmethod
    def gibbs(cls, layer: Layer, v: torch.Tensor, streams, steps: int) -> torch.Tensor:
        B = v.shape[1]
        for _ in range(steps):
            a = layer.pre_activation(v)
            if layer.activation == "linear":
                h = a + streams.randn(B, a.shape[2], dtype=a.dtype)
            else:
                ph = torch.sigmoid(a)
                h = (streams.rand(B, ph.shape[2], dtype=ph.dtype) < ph).to(v.dtype)
            mean_v = cls.down(layer, h)
            if layer.output == "sigmoid":
                pv = torch.sigmoid(mean_v)
                v = (streams.rand(B, pv.shape[2], dtype=pv.dtype) < pv).to(v.dtype)
            else:
                v = mean_v + streams.randn(B, mean_v.shape[2], dtype=v.dtype)
        return v

    def __call__(self, layer: Layer, x: torch.Tensor, noise: tuple, streams=None):
        x = layer.prepare(x)
        with torch.no_grad():
            if self.persistent:
                if self.chains is None or self.chains.shape[2] != x.shape[2]:
                    self.chains = x.detach().clone()
                start = self.chains[:, : x.shape[1]]
            else:
                start = x
            v_model = self.gibbs(layer, start, streams, self.k)
            if self.persistent:
                self.chains[:, : x.shape[1]] = v_model
        loss = self.free_energy(layer, x).mean(1) - self.free_energy(layer, v_model).mean(1)
        with torch.no_grad():  # mean-field reconstruction, comparable with the autoencoders' loss
            h = ACT[layer.activation](layer.pre_activation(x))
            recon = layer.recon_loss(self.down(layer, h), x)
        return loss, recon

    @staticmethod
    @torch.no_grad()
    def copy_decoder(layer: Layer) -> None:
        """An untied layer's own decoder set to its W^T."""
        if layer.decoder_weight is not None:
            layer.decoder_weight.copy_(layer.weight.transpose(1, 2))


def make_objective(cfg, k: int):
    """The objective of layer k (0-based) from a PretrainConfig; decided once, before the loop."""
    kind = cfg.per_layer("objective", k)
    if kind == "rbm":
        return RBMObjective(cfg.cd_k, cfg.persistent)
    return AutoencoderObjective(kind, noise=cfg.per_layer("noise", k), corruption=cfg.corruption,
                                sparsity_target=cfg.sparsity_target,
                                sparsity_weight=cfg.sparsity_weight,
                                sparsity_penalty=cfg.sparsity_penalty, contraction=cfg.contraction)
