"""The deep classifier: hidden layers from a stack checkpoint or a named random init, plus a head.

Both arms of a comparison are built here, so a pretrained and a random-init network differ only in
their hidden weights: same widths, activation, dropout, and the same seeded head. `Stacked` holds
K such networks of one shape as K-stacked tensors, which is how fine-tuning trains them, and
`Dropout` draws their masks, each network at its own rate from its own stream.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from .autoencoders import ACT
from .seeding import seed_for

if TYPE_CHECKING:
    from .train import Streams

ACTIVATION_MODULES = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU,
                      "linear": nn.Identity}  # as autoencoders.ACT


def build_classifier(input_dim: int, widths, activation, n_classes: int,
                     dropout: float = 0.0) -> nn.Sequential:
    """Linear + nonlinearity (+ dropout) per hidden width, then a linear head. `activation` is one
    name or one per layer (a stack may mix them, e.g. an RBM under ReLU layers)."""
    acts = [activation] * len(widths) if isinstance(activation, str) else list(activation)
    mods, n_in = [], input_dim
    for w, act in zip(widths, acts):
        mods += [nn.Linear(n_in, w), ACTIVATION_MODULES[act]()]
        if dropout:
            mods.append(nn.Dropout(dropout))
        n_in = w
    mods.append(nn.Linear(n_in, n_classes))
    return nn.Sequential(*mods)


def hidden_linears(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)][:-1]


def init_random(model: nn.Sequential, scheme: str, seed: int) -> None:
    """Re-initialise the hidden layers with a named scheme, from the run's 'init' stream."""
    g = torch.Generator().manual_seed(seed_for(seed, "init"))
    for lin in hidden_linears(model):
        fan_out, fan_in = lin.weight.shape
        w = torch.empty(lin.weight.shape)
        b = torch.zeros(lin.bias.shape)
        if scheme == "default":  # torch's nn.Linear rule: U(+-1/sqrt(fan_in)) for weight and bias
            bound = 1 / math.sqrt(fan_in)
            w.uniform_(-bound, bound, generator=g)
            b.uniform_(-bound, bound, generator=g)
        elif scheme == "xavier":
            bound = math.sqrt(6 / (fan_in + fan_out))
            w.uniform_(-bound, bound, generator=g)
        elif scheme == "kaiming":
            w.normal_(0, math.sqrt(2 / fan_in), generator=g)
        elif scheme == "uniform":
            bound = 1 / math.sqrt(fan_in)
            w.uniform_(-bound, bound, generator=g)
        else:
            raise ValueError(f"unknown init scheme {scheme!r}")
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)


def init_head(model: nn.Sequential, seed: int) -> None:
    """The head from its own stream, so both arms of a seed start with the same head."""
    head = [m for m in model if isinstance(m, nn.Linear)][-1]
    g = torch.Generator().manual_seed(seed_for(seed, "head"))
    bound = 1 / math.sqrt(head.in_features)
    with torch.no_grad():
        head.weight.copy_(torch.empty(head.weight.shape).uniform_(-bound, bound, generator=g))
        head.bias.zero_()


def load_stack_weights(model: nn.Sequential, stack: dict) -> None:
    with torch.no_grad():
        for lin, layer in zip(hidden_linears(model), stack["layers"]):
            lin.weight.copy_(layer["weight"])
            lin.bias.copy_(layer["bias"])


def assemble(stack: dict | None, *, input_dim: int, n_classes: int, widths=None, activation=None,
             scheme: str = "default", dropout: float = 0.0, seed: int = 0) -> nn.Sequential:
    """A classifier initialised from `stack` (a loaded stack checkpoint), or randomly with `scheme`
    when `stack` is None (then `widths` and `activation` give the shape)."""
    if stack is not None:
        widths = [layer["width"] for layer in stack["layers"]]
        activation = [layer["activation"] for layer in stack["layers"]]
    model = build_classifier(input_dim, widths, activation, n_classes, dropout)
    if stack is not None:
        load_stack_weights(model, stack)
    else:
        init_random(model, scheme, seed)
    init_head(model, seed)
    return model


def describe(stack_path: str | None, scheme: str) -> str:
    return f"pretrained:{stack_path}" if stack_path else f"random:{scheme}"


def activations_of(model: nn.Sequential) -> list[str]:
    names = {cls: name for name, cls in ACTIVATION_MODULES.items()}
    return [names[type(m)] for m in model if type(m) in names]


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x @ weight + bias per slice: x (K, B, in) or (B, in) shared, weight (K, in, out)."""
    if weight.shape[0] == 1:  # one network: a plain GEMM
        return torch.addmm(bias[0], x.squeeze(0) if x.dim() == 3 else x, weight[0]).unsqueeze(0)
    if x.dim() == 2:
        return torch.matmul(x, weight) + bias.unsqueeze(1)
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


class Stacked(nn.Module):
    """K classifiers of one shape (widths, activations) as K-stacked weights: layer l's weight is
    (K, in, out), nn.Linear's transposed, so that each product and its weight gradient are plain
    row-major GEMMs (on the CPU a step of 8 networks is 1.2-1.6x faster than with (K, out, in)
    weights multiplied transposed, most at small batches; scripts/layouts.py). Inputs are (K, B, D), one batch per
    network, or (B, D) shared by all."""

    def __init__(self, models: list[nn.Sequential]):
        super().__init__()
        shapes = {repr([m for m in model if not isinstance(m, nn.Dropout)]) for model in models}
        if len(shapes) > 1:
            raise ValueError("networks trained together must have the same architecture")
        self.activations = activations_of(models[0])
        linears = [[m for m in model if isinstance(m, nn.Linear)] for model in models]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([ls[j].weight.detach().t() for ls in linears]).contiguous())
            for j in range(len(linears[0])))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([ls[j].bias.detach() for ls in linears]).clone())
            for j in range(len(linears[0])))

    @property
    def widths(self) -> list[int]:
        return [w.shape[2] for w in self.weights[:-1]]

    def head(self) -> list[nn.Parameter]:
        return [self.weights[-1], self.biases[-1]]

    def forward(self, x: torch.Tensor, masks: list | None = None) -> torch.Tensor:
        """Logits (K, B, classes). `masks`, for dropout: one for the inputs, then one per hidden
        layer, each already scaled, or None where that layer has no dropout."""
        masks = masks or [None] * (len(self.activations) + 1)
        for j, act in enumerate(self.activations):
            if masks[j] is not None:
                x = x * masks[j]
            x = ACT[act](affine(x, self.weights[j], self.biases[j]))
        if masks[-1] is not None:
            x = x * masks[-1]
        return affine(x, self.weights[-1], self.biases[-1])

    @torch.no_grad()
    def cap_norms(self, c) -> None:
        """Max-norm: scale down each hidden unit's incoming weight vector whose L2 norm exceeds c
        (one cap, or a (K,) tensor of one per network; inf leaves a network uncapped)."""
        c = torch.as_tensor(c, device=self.weights[0].device).view(-1, 1, 1)
        for w in self.weights[:-1]:  # unit j's incoming weights are w[k, :, j]
            w.mul_((c / w.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1))

    @torch.no_grad()
    def copy_into(self, i: int, model: nn.Sequential, params=None) -> nn.Sequential:
        """Network i (from `params`, a list like self.parameters(), when given) into `model`."""
        params = list(params if params is not None else self.parameters())
        n = len(self.weights)
        for j, lin in enumerate(m for m in model if isinstance(m, nn.Linear)):
            lin.weight.copy_(params[j][i].t())
            lin.bias.copy_(params[n + j][i])
        return model


class Dropout:
    """One layer's inverted dropout for K networks, each at its own rate."""

    def __init__(self, rates: list[float], device):
        self.draws = [p > 0 for p in rates]
        self.rate = torch.tensor(rates, device=device).view(-1, 1, 1)
        self.scale = torch.tensor([1 - p for p in rates], device=device).view(-1, 1, 1)

    def masks(self, streams: Streams, batch: int, width: int) -> torch.Tensor:
        """(K, batch, width) masks, network k's drawn from its own stream; a network at rate 0
        draws nothing (its stream moves as it would alone) and keeps every unit."""
        return (streams.rand(batch, width, only=self.draws) >= self.rate) / self.scale
