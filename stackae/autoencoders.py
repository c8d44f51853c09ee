"""One layer of K stacks: the parameters that pretraining trains and a stack is built from.

A `Layer` holds K independent autoencoder layers (one per slice of a leading K dimension): an
encoder (weight K x out x in, bias) with a tied or untied decoder. Inputs are (K, B, in), one batch
per slice, or (B, in) shared by all slices. The objectives that train it are in objectives.py.
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
