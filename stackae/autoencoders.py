"""One layer of K stacks and the objectives that train it.

A `Layer` holds K independent autoencoder layers (one per slice of a leading K dimension): an
encoder (weight K x out x in, bias) with a tied or untied decoder. Inputs are (K, B, in), one batch
per slice, or (B, in) shared by all slices. An objective maps a batch to per-slice (loss to
minimise, reconstruction loss), each of shape (K,): plain, denoising (masking, salt-and-pepper or
Gaussian corruption), sparse (KL or L1), contractive (closed-form Jacobian norm) and RBM (CD-k /
persistent CD through the free-energy difference, so one optimiser loop trains all). Summing the K
losses gives every slice its own gradient, so K slices train as K separate runs would.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Hidden units by name; "linear" is only a stack's top layer (a deep autoencoder's code, Hinton &
# Salakhutdinov 2006), not a choice of --activation.
ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
       "linear": lambda x: x}


def wide(t: torch.Tensor) -> torch.Tensor:
    """float32 for the sums of a loss (bfloat16 under autocast would round them); float64 stays."""
    return t if t.dtype == torch.float64 else t.float()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x @ weight^T + bias per slice: x (K, B, in) or (B, in) shared, weight (K, out, in)."""
    if weight.shape[0] == 1:  # one network: a plain GEMM (10-15% faster than a batch of one)
        return F.linear(x.squeeze(0) if x.dim() == 3 else x, weight.squeeze(0),
                        bias.squeeze(0)).unsqueeze(0)
    if x.dim() == 2:
        return torch.matmul(x, weight.transpose(1, 2)) + bias.unsqueeze(1)
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class Layer(nn.Module):
    def __init__(self, k: int, n_in: int, n_out: int, activation: str = "sigmoid",
                 tied: bool = True, output: str = "sigmoid", standardize: bool = False):
        super().__init__()
        self.activation, self.tied, self.output, self.standardize = activation, tied, output, standardize
        self.weight = nn.Parameter(torch.zeros(k, n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(k, n_out))
        self.decoder_bias = nn.Parameter(torch.zeros(k, n_in))
        self.decoder_weight = None if tied else nn.Parameter(torch.zeros(k, n_in, n_out))
        # Inputs standardised inside the layer (Gaussian RBMs); folded into the weights on export.
        self.register_buffer("in_mean", torch.zeros(k, n_in))
        self.register_buffer("in_std", torch.ones(k, n_in))

    @property
    def k(self) -> int:
        return self.weight.shape[0]

    @property
    def n_in(self) -> int:
        return self.weight.shape[2]

    @property
    def n_out(self) -> int:
        return self.weight.shape[1]

    def init_slice(self, i: int, g: torch.Generator, rbm: bool = False) -> None:
        """Slice i's start from its own generator: torch's nn.Linear rule (U(+-1/sqrt(fan_in)) for
        weight and bias), or the classic RBM start (N(0, 0.01^2) weights, zero biases)."""
        with torch.no_grad():
            w = torch.empty(self.n_out, self.n_in)
            b = torch.zeros(self.n_out)
            if rbm:
                w.normal_(0, 0.01, generator=g)
            else:
                bound = 1 / math.sqrt(self.n_in)
                w.uniform_(-bound, bound, generator=g)
                b.uniform_(-bound, bound, generator=g)
            self.weight[i].copy_(w)
            self.bias[i].copy_(b)
            if self.decoder_weight is not None:
                self.decoder_weight[i].copy_(w.t())

    def subset(self, idx: list[int]) -> "Layer":
        """A new Layer of the slices `idx` (copies), e.g. the stacks whose layer is still to train."""
        new = Layer(len(idx), self.n_in, self.n_out, self.activation, self.tied, self.output,
                    self.standardize).to(self.weight.device)
        new.load_state_dict({n: t[idx] for n, t in self.state_dict().items()})
        return new

    @torch.no_grad()
    def assign(self, idx: list[int], other: "Layer") -> None:
        """Copy `other`'s slices into slices `idx` of this layer."""
        mine = self.state_dict()
        for n, t in other.state_dict().items():
            mine[n][idx] = t

    # ---- one slice in the checkpoint's names -----------------------------------------------
    def slice_state(self, i: int) -> dict:
        """Slice i as the state dict of a single layer (the layerK.pt format)."""
        state = {"encoder.weight": self.weight[i], "encoder.bias": self.bias[i],
                 "decoder_bias": self.decoder_bias[i], "in_mean": self.in_mean[i],
                 "in_std": self.in_std[i]}
        if self.decoder_weight is not None:
            state["decoder_weight"] = self.decoder_weight[i]
        return {n: t.detach().cpu().clone() for n, t in state.items()}

    def load_slice(self, i: int, state: dict) -> None:
        with torch.no_grad():
            for name, t in self.slice_state(i).items():
                if name not in state or state[name].shape != t.shape:
                    raise KeyError(name)
            self.weight[i].copy_(state["encoder.weight"])
            self.bias[i].copy_(state["encoder.bias"])
            self.decoder_bias[i].copy_(state["decoder_bias"])
            self.in_mean[i].copy_(state["in_mean"])
            self.in_std[i].copy_(state["in_std"])
            if self.decoder_weight is not None:
                self.decoder_weight[i].copy_(state["decoder_weight"])

    def export(self, i: int) -> dict:
        """Slice i's encoder with any input standardisation folded in: what the classifier gets."""
        w, b = self.weight[i].detach(), self.bias[i].detach()
        if self.standardize:
            b = b - (w * (self.in_mean[i] / self.in_std[i])).sum(1)
            w = w / self.in_std[i]
        out = {"weight": w.float().cpu().clone(), "bias": b.float().cpu().clone(),
               "decoder_bias": self.decoder_bias[i].detach().float().cpu().clone()}
        if self.decoder_weight is not None:
            out["decoder_weight"] = self.decoder_weight[i].detach().float().cpu().clone()
        return out

    # ---- the maths, every slice at once ----------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean.unsqueeze(1)) / self.in_std.unsqueeze(1) if self.standardize else x

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return ACT[self.activation](self.pre_activation(self.prepare(x)))

    def decode_raw(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder output before its nonlinearity, in the layer's (standardised) input space."""
        w = self.weight.transpose(1, 2) if self.tied else self.decoder_weight
        return linear(h, w, self.decoder_bias)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder output in the original input space."""
        out = self.decode_raw(h)
        if self.output == "sigmoid":
            return torch.sigmoid(out)
        return out * self.in_std.unsqueeze(1) + self.in_mean.unsqueeze(1) if self.standardize else out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Clean reconstruction in the original input space (for figures)."""
        return self.decode(self.encode(x))

    def recon_loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(K,): each slice's reconstruction loss, summed over features, averaged over its batch."""
        if target.dim() == 2:
            target = target.expand(raw.shape)
        if self.output == "sigmoid":
            loss = F.binary_cross_entropy_with_logits(wide(raw), wide(target), reduction="none")
        else:
            loss = F.mse_loss(wide(raw), wide(target), reduction="none")
        return loss.sum((1, 2)) / raw.shape[1]


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
