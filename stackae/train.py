"""Pieces every training stage shares: the device, precision, optimizer, divergence, and the
per-network random streams of a K-network loop (batch orders on the host, noise on the device).

Pretraining, the unrolled autoencoder and fine-tuning all train K networks at once whose parameters
carry a leading K dimension; each of the K slices draws from its own seed's named streams, so a
slice trained beside others equals the same network trained alone (K = 1).
"""
from __future__ import annotations

import dataclasses
import functools
from contextlib import contextmanager, nullcontext

import torch

from .runlog import Diverged  # noqa: F401  (raised here by check_finite)
from .seeding import generator


def check_lockstep(cfgs: list, may_differ: tuple, what: str) -> None:
    """Networks trained in one loop share every setting but those in `may_differ`."""
    for f in dataclasses.fields(cfgs[0]):
        values = {str(getattr(c, f.name)) for c in cfgs}
        if f.name not in may_differ and len(values) > 1:
            raise ValueError(f"{what} together must share {f.name}; got {sorted(values)}")


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when torch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


@contextmanager
def matmul_precision(precision: str):
    """For the block, CUDA float32 matmuls (forward and backward) may use TF32 tensor cores when
    `precision` is tf32; runs check that it is asked for on CUDA only (resolve.device_of)."""
    if precision != "tf32":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def autocast(precision: str, device: torch.device):
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def compiled(fn, enabled: bool, device: torch.device):
    """`fn` compiled by torch.compile when `enabled` (mode "reduce-overhead" on CUDA, which
    replays the compiled forward and backward as CUDA graphs), else `fn` itself. Shapes are
    static: a loop calls `fn` itself for an epoch's last, shorter batch rather than compile it
    again."""
    if not enabled:
        return fn
    # one nested step function serves every layer and group of a process, each shape a new
    # compilation: dynamo's default of 8 per function would fall back to eager without a word
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    if device.type != "cuda":
        return torch.compile(fn, dynamic=False)
    step = torch.compile(fn, mode="reduce-overhead", dynamic=False)

    def graphed(*args):
        torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are consumed
        return step(*args)
    return graphed


def optimizer_slice(opt: torch.optim.Optimizer, k: int) -> dict:
    """Network k's part of the state of an optimizer over K-stacked tensors: slice k of each
    per-parameter buffer (momentum, Adam's moments), shared scalars (Adam's step count) whole.
    It is independent of the learning rate, so it loads into any group of networks (load_slices)."""
    return {i: {name: (v[k].clone() if torch.is_tensor(v) and v.dim() else v)
                for name, v in entry.items()}
            for i, entry in opt.state_dict()["state"].items()}


def load_slices(opt: torch.optim.Optimizer, slices: list[dict]) -> None:
    """Load K networks' optimizer_slice states, in order, into one optimizer over their K-stacked
    parameters; its parameter groups (learning rates) stay as they are."""
    state = {i: {name: (torch.stack([s[i][name] for s in slices]) if torch.is_tensor(v) and v.dim()
                        else v) for name, v in entry.items()}
             for i, entry in slices[0].items()}
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float):
    """Adam or SGD with momentum, fused into one kernel per step (scripts/bench.py: the
    per-parameter loop costs ~15% of a 784x1000 layer's step on CPU). Both update elementwise, so
    one optimizer over K-stacked tensors moves each slice as a separate run would."""
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)


class Streams:
    """One named random stream per slice: `orders` on the host (seeded permutations, as torch's
    CPU generator gives them on every machine), `rand`/`randn` on the device."""

    def __init__(self, seeds, name: str, device: torch.device):
        self.seeds, self.name, self.device = list(seeds), name, device

    @functools.cached_property
    def host(self) -> list[torch.Generator]:  # made on first use: a stream uses one side or both
        return [generator(s, self.name) for s in self.seeds]

    @functools.cached_property
    def dev(self) -> list[torch.Generator]:
        return [generator(s, f"{self.name}/device", self.device) for s in self.seeds]

    def orders(self, n: int, repeats: int = 1) -> torch.Tensor:
        """(K, repeats * n): each slice's `repeats` permutations of range(n), end to end."""
        return torch.stack([torch.cat([torch.randperm(n, generator=g) for _ in range(repeats)])
                            for g in self.host]).to(self.device)

    def rand(self, *shape, dtype=torch.float32, only=None) -> torch.Tensor:
        """(K, *shape) uniforms in [0, 1), slice k from stream k; with `only` (K booleans), the
        slices not named draw nothing and get zeros."""
        return torch.stack([torch.rand(shape, generator=g, device=self.device, dtype=dtype)
                            if only is None or only[k] else
                            torch.zeros(shape, device=self.device, dtype=dtype)
                            for k, g in enumerate(self.dev)])

    def randn(self, *shape, dtype=torch.float32) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype)
                            for g in self.dev])

    def state(self, k: int) -> dict:
        """Slice k's position in both its streams, for a resume point."""
        return {"host": self.host[k].get_state(), "dev": self.dev[k].get_state()}

    def set_state(self, k: int, state: dict) -> None:
        self.host[k].set_state(state["host"])
        self.dev[k].set_state(state["dev"])


def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(K, ...) from K tensors; one tensor named K times is a view, not K copies."""
    if all(t is tensors[0] for t in tensors):
        return tensors[0].unsqueeze(0).expand(len(tensors), *tensors[0].shape)
    return torch.stack(tensors)


@torch.no_grad()
def keep_slices(which: torch.Tensor, src: list[torch.Tensor], dst: list[torch.Tensor]) -> None:
    """Copy slice k of every tensor in `src` into the same slice of `dst` where which[k] (K
    booleans): how each network's best epoch so far is kept while the others train on."""
    for p, q in zip(src, dst):
        q.copy_(torch.where(which.view(-1, *[1] * (p.dim() - 1)), p, q))


def check_finite(values: torch.Tensor, what) -> None:
    """Raise Diverged naming the first slice whose value is not finite; `what(k)` describes it."""
    bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
    if bad:
        raise Diverged(what(bad[0]))

