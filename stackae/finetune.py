"""Supervised fine-tuning of K classifiers at once, each on its own label budget draw, with model
selection on its own validation error.

    stackae finetune --init runs/pretrain/demo/stack.pt --out runs/finetune/demo-pre
    stackae finetune --init random --like runs/pretrain/demo/stack.pt --out runs/finetune/demo-rand

A single run is K = 1; `stackae ablate` trains every arm and seed of a label budget together. The
K networks share their settings (all but config.PER_NETWORK: seed, init, learning rate, weight
decay, dropout, input dropout and max-norm) and shape, and nothing else: each has its own data
split, labelled subset, batch order, dropout masks, model selection and early stopping, so a
network trained beside others ends as it would alone (tests/test_stacked.py). result.json reports
the test error at the epoch of best validation error (None with read_test off, as in stackae tune's trials), and the curves.

A long fine-tuning saves each network's resume point (resume.pt in its folder, resume.py) at the
end of an epoch every resume.RESUME_SECONDS; a killed run continues from there, with any K (its
networks may be batched differently on resume), and ends as it would have uninterrupted.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .config import PER_NETWORK, FinetuneConfig
from .interrupt import stop_point
from .network import Stacked
from .resume import Loop, save_points
from .runlog import RESUME_NAME
from . import resume, train
from .train import Streams, autocast, check_finite, compiled, keep_slices, make_optimizer

CURVES = ("train_loss", "train_error", "val_loss", "val_error", "test_error")


def check_lockstep(cfgs: list[FinetuneConfig], idxs: list) -> None:
    train.check_lockstep(cfgs, PER_NETWORK, "networks fine-tuned")
    if len({len(i) for i in idxs}) > 1:
        raise ValueError("networks fine-tuned together must have as many labelled examples each")


def repeats(n: int, min_examples: int) -> int:
    return max(1, math.ceil(min_examples / n))


def make_schedule(cfg: FinetuneConfig, opt: torch.optim.Optimizer, n: int):
    """The learning-rate scheduler --lr-schedule asks for, stepped once per batch (constant keeps
    --lr exactly). Cosine reaches 0 after the last batch of epoch `cfg.epochs`."""
    if cfg.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    steps = cfg.epochs * math.ceil(n * repeats(n, cfg.min_epoch_examples) / cfg.batch_size)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))


class Selection:
    """One network's bookkeeping: its curves, the epoch of best validation error (whose test error
    is the result) and patience. The K-network loop keeps one per network."""

    def __init__(self, patience: int):
        self.patience = patience
        self.curves = {k: [] for k in CURVES}
        self.best = {"val_error": math.inf, "epoch": 0, "test_error": None}
        self.stopped = False

    def update(self, epoch: int, values: dict) -> bool:
        """Record an epoch; True when it is the best so far. Sets `stopped` when patience ran out."""
        for k in CURVES:
            self.curves[k].append(values[k])
        if values["val_error"] < self.best["val_error"]:
            self.best = {"val_error": values["val_error"], "epoch": epoch,
                         "test_error": values["test_error"]}
            return True
        if self.patience and epoch - self.best["epoch"] >= self.patience:
            self.stopped = True
        return False

    def state(self) -> dict:
        return {"curves": self.curves, "best": self.best, "stopped": self.stopped}

    def set_state(self, state: dict) -> None:
        self.curves, self.best, self.stopped = state["curves"], state["best"], state["stopped"]

    def result(self, **extra) -> dict:
        last = {k: (v[-1] if v else None) for k, v in self.curves.items()}
        return {"test_error": self.best["test_error"], "best_epoch": self.best["epoch"],
                "best_val_error": self.best["val_error"],
                "final_train_error": last["train_error"], "final_val_error": last["val_error"],
                "final_test_error": last["test_error"], "epochs_run": len(self.curves["val_error"]),
                **extra, "curves": self.curves}


def unique_stack(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the distinct tensors of a list (the same object once) and say which one each entry is:
    arms of one seed share their data, so K networks need only as many copies as seeds."""
    first = {}
    which = [first.setdefault(id(t), len(first)) for t in tensors]
    distinct = {i: t for t, i in zip(tensors, which)}
    return (torch.stack([distinct[i] for i in range(len(distinct))]),
            torch.tensor(which, device=tensors[0].device))


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


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, which: torch.Tensor, amp,
             examples: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Each network's (mean cross-entropy, error rate) on its own set x[which[k]], y[which[k]]."""
    K, n = len(which), x.shape[1]
    loss = torch.zeros(K, device=x.device)
    wrong = torch.zeros(K, device=x.device)
    step = max(1, examples // K)
    for a in range(0, n, step):
        xb, yb = x[:, a:a + step][which], y[:, a:a + step][which]
        with amp:
            logits = net(xb)
        loss += F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(),
                                reduction="none").view(K, -1).sum(1)
        wrong += (logits.argmax(-1) != yb).sum(1)
    return loss / max(n, 1), wrong / max(n, 1)


def finetune(cfgs: list[FinetuneConfig], datas: list, models: list[nn.Sequential], inits: list[str],
             idxs: list[torch.Tensor], logs: list, folders: list | None = None,
             resumed: list[dict] | None = None) -> list[dict]:
    """Train network k (models[k], an assembled classifier) on the labelled subset idxs[k] of
    datas[k] under cfgs[k], for every k at once; each network's selected state is loaded back
    into models[k], and each gets its result record. With `folders`, network k's resume point is
    saved in folders[k] every resume.RESUME_SECONDS; `resumed` (checkpoint.load_resume's, one per
    network, all after the same epoch) continues from saved points."""
    check_lockstep(cfgs, idxs)
    cfg, K = cfgs[0], len(cfgs)
    device = datas[0].train_x.device
    net = Stacked(models).to(device)
    if cfg.freeze_encoder:
        net.requires_grad_(False)
        for p in net.head():
            p.requires_grad_(True)
    # Networks with different learning rates (tuning trials) share one optimizer at rate 1 whose
    # step each network's rate then scales: SGD's and Adam's steps are proportional to the rate,
    # so network k moves as it would alone at its own rate.
    # Networks with different weight decays add their own L2 term to their gradient slice, as
    # the optimizer (then without one) adds it for a network alone.
    lrs = torch.tensor([c.lr for c in cfgs], device=device)
    scaled = len(set(lrs.tolist())) > 1
    decays = torch.tensor([c.weight_decay for c in cfgs], device=device)
    own_decay = len(set(decays.tolist())) > 1
    trained = [p for p in net.parameters() if p.requires_grad]
    opt = make_optimizer(cfg.optimizer, trained, 1.0 if scaled else cfg.lr, cfg.momentum,
                         0.0 if own_decay else cfg.weight_decay)
    n = len(idxs[0])
    schedule = make_schedule(cfg, opt, n)
    # labelled sets, validation and test sets: one copy per distinct data split
    labelled = {}
    for d, i in zip(datas, idxs):
        labelled.setdefault((id(d), id(i)), (d.train_x[i], d.train_y[i]))
    keys = [(id(d), id(i)) for d, i in zip(datas, idxs)]
    x, which = unique_stack([labelled[k][0] for k in keys])
    y = unique_stack([labelled[k][1] for k in keys])[0]
    val_x, on_val = unique_stack([d.val_x for d in datas])
    val_y = unique_stack([d.val_y for d in datas])[0]
    test_x, on_test = unique_stack([d.test_x for d in datas])
    test_y = unique_stack([d.test_y for d in datas])[0]
    batches = Streams([c.seed for c in cfgs], "batches", device)
    # dropout rates per layer (inputs, then hidden layers) and max-norm caps, one per network
    rates = [[c.input_dropout for c in cfgs]] + [[c.dropout for c in cfgs]] * len(net.widths)
    drops = [Dropout(p, device) if any(p) else None for p in rates]
    dropout = Streams([c.seed for c in cfgs], "dropout", device) if any(drops) else None
    caps = (torch.tensor([c.max_norm or math.inf for c in cfgs], device=device)
            if any(c.max_norm for c in cfgs) else None)
    rows = which[:, None]
    amp = autocast(cfg.precision, device)
    sel = [Selection(cfg.patience) for _ in cfgs]
    best = [p.detach().clone() for p in net.parameters()]

    def forward(xb, yb, masks):
        """(K,) mean losses and (K,) counts of errors of a batch: the step's compiled part."""
        with amp:
            logits = net(xb, masks)
        loss = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(),
                               reduction="none").view(K, -1).mean(1)
        return loss, (logits.detach().argmax(-1) != yb).sum(1)
    step = compiled(forward, cfg.compile, device)
    loop = Loop(net, best, opt, schedule, {"batches": batches, "dropout": dropout}, sel)
    start, spent = 0, [0.0] * K  # each network's seconds before this call (a resumed run's)
    if resumed:
        start, spent = resumed[0]["epoch"], [r["seconds"] for r in resumed]
        loop.restore(resumed)
        for log in logs:
            log.progress(f"resuming after epoch {start} of {cfg.epochs} ({RESUME_NAME})")
    t_start = last_saved = time.perf_counter()
    for epoch in range(start + 1, cfg.epochs + 1):
        if all(s.stopped for s in sel):
            break
        t0 = time.perf_counter()
        order = batches.orders(n, repeats(n, cfg.min_epoch_examples))
        total_loss = torch.zeros(K, device=device)
        wrong = torch.zeros(K, device=device)
        for b in order.split(cfg.batch_size, dim=1):
            masks = None
            if dropout is not None:
                masks = [d.masks(dropout, b.shape[1], w) if d else None
                         for d, w in zip(drops, [x.shape[2]] + net.widths)]
            yb = y[rows, b]
            full = b.shape[1] == cfg.batch_size
            loss, batch_wrong = (step if full else forward)(x[rows, b], yb, masks)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # slice k of every gradient is network k's own
            if own_decay:
                with torch.no_grad():
                    for p in trained:
                        p.grad.add_(p * decays.view(-1, *[1] * (p.dim() - 1)))
            if scaled:
                before = [p.detach().clone() for p in trained]
            opt.step()
            if scaled:
                with torch.no_grad():
                    for p, q in zip(trained, before):
                        p.copy_(torch.lerp(q, p, lrs.view(-1, *[1] * (p.dim() - 1))))
            schedule.step()
            if caps is not None:
                net.cap_norms(caps)
            total_loss += loss.detach() * b.shape[1]
            wrong += batch_wrong
            stop_point()
        seen = order.shape[1]
        running = [k for k in range(K) if not sel[k].stopped]
        check_finite(total_loss[running], lambda j: (
            f"fine-tuning diverged: seed {cfgs[running[j]].seed} ({inits[running[j]]}), epoch "
            f"{epoch} has a non-finite loss; try a smaller --lr (now {cfgs[running[j]].lr:g})"))
        val_loss, val_error = evaluate(net, val_x, val_y, on_val, amp)
        test_error = (evaluate(net, test_x, test_y, on_test, amp)[1] if cfg.read_test
                      else torch.full_like(val_error, math.nan))
        stats = torch.stack([total_loss / seen, wrong / seen, val_loss, val_error, test_error])
        stats = stats.tolist()  # one host sync per epoch
        if not cfg.read_test:
            stats[CURVES.index("test_error")] = [None] * K
        dt = time.perf_counter() - t0
        improved = torch.zeros(K, dtype=torch.bool)
        for k in running:
            values = {c: stats[j][k] for j, c in enumerate(CURVES)}
            improved[k] = sel[k].update(epoch, values)
            logs[k].scalars(epoch, {**{f"finetune/{c}": v for c, v in values.items()
                                       if v is not None},
                                    "finetune/epoch_seconds": dt,
                                    "finetune/lr": opt.param_groups[0]["lr"] * (
                                        cfgs[k].lr if scaled else 1)}, stage="finetune")
            test = (f"test err {values['test_error']:.4f}  " if cfg.read_test else "")
            logs[k].progress(f"epoch {epoch}/{cfg.epochs}  loss {values['train_loss']:.4f}  train "
                             f"err {values['train_error']:.4f}  val err {values['val_error']:.4f}  "
                             f"{test}{dt:.1f}s")
            if sel[k].stopped:
                logs[k].progress(f"early stop: no better validation error for {cfg.patience} "
                                 "epochs")
        if improved.any():
            keep_slices(improved.to(device), list(net.parameters()), best)
        if (folders and epoch < cfg.epochs and not all(s.stopped for s in sel)
                and time.perf_counter() - last_saved >= resume.RESUME_SECONDS):
            share = (time.perf_counter() - t_start) / K
            if not save_points(loop, folders, cfgs, device, epoch, [s + share for s in spent]):
                folders = None
            last_saved = time.perf_counter()
    if cfg.epochs == 0:  # the initial networks are the results
        _, val_error = evaluate(net, val_x, val_y, on_val, amp)
        test_error = (evaluate(net, test_x, test_y, on_test, amp)[1].tolist() if cfg.read_test
                      else [None] * K)
        for s, v, t in zip(sel, val_error.tolist(), test_error):
            s.best.update(val_error=v, test_error=t)
    share = (time.perf_counter() - t_start) / K  # each network's share, so sums stay right
    for k, model in enumerate(models):
        net.copy_into(k, model.to(device), best)
    return [s.result(labels=len(i), init=init, seed=c.seed, seconds=before + share)
            for s, i, init, c, before in zip(sel, idxs, inits, cfgs, spent)]
