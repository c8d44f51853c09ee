"""Supervised fine-tuning of K classifiers at once, each on its own label budget draw, with model
selection on its own validation error.

    stackae finetune --init runs/pretrain/demo/stack.pt --out runs/finetune/demo-pre
    stackae finetune --init random --like runs/pretrain/demo/stack.pt --out runs/finetune/demo-rand

A single run is K = 1; `stackae ablate` trains every arm and seed of a label budget together. The
K networks share their settings (all but config.PER_NETWORK: seed, init, learning rate, weight
decay, dropout, input dropout and max-norm) and shape, and nothing else: each has its own data
split, labelled subset, batch order, dropout masks, model selection and early stopping, so a
network trained beside others ends as it would alone (tests/test_stacked.py). result.json reports
the test error of the selected network (the weights of its epoch of best validation error, those
saved in model.pt), its test set read once when it finishes (None with read_test off, as in
stackae tune's trials), and the curves, which hold no test error: training never reads it.
Networks that stop early (patience, a pruned tuning trial) leave the loop once at most half of it
trains on: the rest go on as a narrower loop.

A long fine-tuning saves each network's resume point (resume.pt in its folder, resume.py) at the
end of an epoch every resume.RESUME_SECONDS; a killed run continues from there, with any K (its
networks may be batched differently on resume), and ends as it would have uninterrupted.
"""
from __future__ import annotations

import functools
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .config import PER_NETWORK, FinetuneConfig
from .interrupt import stop_point
from .network import Dropout, Stacked
from .resume import Loop, save_points
from .runlog import RESUME_NAME
from .selection import CURVES, Selection
from . import resume, train
from .train import Streams, autocast, check_finite, compiled, keep_slices, make_optimizer


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


def unique_stack(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the distinct tensors of a list (the same object once) and say which one each entry is:
    arms of one seed share their data, so K networks need only as many copies as seeds."""
    first = {}
    which = [first.setdefault(id(t), len(first)) for t in tensors]
    distinct = {i: t for t, i in zip(tensors, which)}
    return (torch.stack([distinct[i] for i in range(len(distinct))]),
            torch.tensor(which, device=tensors[0].device))


@torch.no_grad()
def tested(model: nn.Sequential, data, amp, examples: int = 8192) -> float:
    """The test error of one finished network (its selected weights, as saved in model.pt): the
    one read of its test set, after its training."""
    was, wrong = model.training, 0
    model.eval()
    for x, y in zip(data.test_x.split(examples), data.test_y.split(examples)):
        with amp:
            wrong += (model(x).argmax(-1) != y).sum().item()
    model.train(was)
    return wrong / max(len(data.test_y), 1)


def held_out(datas: list, split: str) -> tuple:
    """evaluate's (x, y, which) for the networks' validation or test sets (`split`)."""
    x, which = unique_stack([getattr(d, f"{split}_x") for d in datas])
    return x, unique_stack([getattr(d, f"{split}_y") for d in datas])[0], which


@torch.no_grad()
def evaluate(net: Stacked, x: torch.Tensor, y: torch.Tensor, which: torch.Tensor, amp,
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
             resumed: list[dict] | None = None, prune: list | None = None) -> list[dict]:
    """Train network k (models[k], an assembled classifier) on the labelled subset idxs[k] of
    datas[k] under cfgs[k], for every k at once; each network's selected state is loaded back
    into models[k], and each gets its result record. With `folders`, network k's resume point is
    saved in folders[k] every resume.RESUME_SECONDS; `resumed` (checkpoint.load_resume's, one per
    network, all after the same epoch) continues from saved points. `prune` (a callable or None
    per network) is asked after each epoch, given the network's validation errors so far, whether
    it stops there (a tuning trial's pruner: tune.py).

    A network that has stopped (patience, pruning) is not trained on: once at most half of a
    loop's networks are still training, they go on as a loop of their own, restored from their
    states as from resume points (resume.Loop; saved then too, where `folders` are given).
    Stopped networks then cost nothing, and a loop is rebuilt at most log2(K) times (never when
    compiled: narrower)."""
    check_lockstep(cfgs, idxs)
    cfg, K = cfgs[0], len(cfgs)
    results, members, spent = [None] * K, list(range(K)), [0.0] * K
    points, epoch = resumed, 0
    if resumed:
        epoch, spent = resumed[0]["epoch"], [r["seconds"] for r in resumed]
        for log in logs:
            log.progress(f"resuming after epoch {epoch} of {cfg.epochs} ({RESUME_NAME})")
    last_saved = time.perf_counter()
    while members:
        part = Part(*([v[k] for k in members] for v in (cfgs, datas, models, inits, idxs, logs)),
                    [folders[k] for k in members] if folders else None,
                    [prune[k] for k in members] if prune else None)
        if points:
            part.loop.restore(points)
        t0 = time.perf_counter()
        while epoch < cfg.epochs and part.running() and not narrower(part, len(members), cfg):
            epoch += 1
            part.epoch(epoch)
            if (part.folders and epoch < cfg.epochs and part.running()
                    and time.perf_counter() - last_saved >= resume.RESUME_SECONDS):
                share = (time.perf_counter() - t0) / len(members)
                part.save(epoch, [spent[k] + share for k in members])
                last_saved = time.perf_counter()
        going = part.running() if epoch < cfg.epochs else []
        share = (time.perf_counter() - t0) / len(members)  # each network's share: sums stay right
        if going and part.folders:  # the stopped ones' points say so: a resume ends them at once
            part.save(epoch, [spent[k] + share for k in members])
            last_saved = time.perf_counter()
        folders = folders if part.folders else None  # a save failed: no more points
        for j, k in enumerate(members):
            spent[k] += share
            if j not in going:
                results[k] = part.finish(j, spent[k])
        points = [part.loop.state(j) for j in going]
        members = [members[j] for j in going]
        del part  # before the narrower loop is built
    return results


def narrower(part: "Part", k: int, cfg: FinetuneConfig) -> bool:
    """Whether the networks still training go on as a narrower loop: when at most half of the
    loop's K are. Not when compiled (--compile), where the new K compiles the step again, which
    costs more than the stopped networks' slices of a GPU's launch-bound step."""
    return 2 * len(part.running()) <= k and not cfg.compile


class Part:
    """The fine-tuning loop of K networks, run an epoch at a time by finetune until every one has
    stopped or at most half of them are still training."""

    def __init__(self, cfgs, datas, models, inits, idxs, logs, folders, prune):
        self.cfgs, self.datas, self.models, self.inits = cfgs, datas, models, inits
        self.idxs, self.logs, self.folders = idxs, logs, folders
        self.prune = prune or [None] * len(cfgs)
        cfg, K = cfgs[0], len(cfgs)
        self.device = device = datas[0].train_x.device
        self.net = net = Stacked(models).to(device)
        if cfg.freeze_encoder:
            net.requires_grad_(False)
            for p in net.head():
                p.requires_grad_(True)
        # Networks with different learning rates (tuning trials) share one optimizer at rate 1
        # whose step each network's rate then scales: SGD's and Adam's steps are proportional to
        # the rate, so network k moves as it would alone at its own rate.
        # Networks with different weight decays add their own L2 term to their gradient slice,
        # as the optimizer (then without one) adds it for a network alone.
        self.lrs = torch.tensor([c.lr for c in cfgs], device=device)
        self.scaled = len(set(self.lrs.tolist())) > 1
        self.decays = torch.tensor([c.weight_decay for c in cfgs], device=device)
        self.own_decay = len(set(self.decays.tolist())) > 1
        self.trained = [p for p in net.parameters() if p.requires_grad]
        self.opt = make_optimizer(cfg.optimizer, self.trained, 1.0 if self.scaled else cfg.lr,
                                  cfg.momentum, 0.0 if self.own_decay else cfg.weight_decay)
        self.n = len(idxs[0])
        self.schedule = make_schedule(cfg, self.opt, self.n)
        # labelled sets, validation and test sets: one copy per distinct data split
        labelled = {}
        for d, i in zip(datas, idxs):
            labelled.setdefault((id(d), id(i)), (d.train_x[i], d.train_y[i]))
        keys = [(id(d), id(i)) for d, i in zip(datas, idxs)]
        self.x, which = unique_stack([labelled[k][0] for k in keys])
        self.y = unique_stack([labelled[k][1] for k in keys])[0]
        self.rows = which[:, None]
        self.val = held_out(datas, "val")  # the test sets are read once each, by finish
        self.batches = Streams([c.seed for c in cfgs], "batches", device)
        # dropout rates per layer (inputs, then hidden layers) and max-norm caps, one per network
        rates = [[c.input_dropout for c in cfgs]] + [[c.dropout for c in cfgs]] * len(net.widths)
        self.drops = [Dropout(p, device) if any(p) else None for p in rates]
        self.dropout = Streams([c.seed for c in cfgs], "dropout", device) if any(self.drops) \
            else None
        self.caps = (torch.tensor([c.max_norm or math.inf for c in cfgs], device=device)
                     if any(c.max_norm for c in cfgs) else None)
        self.amp = amp = autocast(cfg.precision, device)
        self.sel = [Selection(cfg.patience) for _ in cfgs]
        self.best = [p.detach().clone() for p in net.parameters()]

        def forward(xb, yb, masks):
            """(K,) mean losses and (K,) counts of errors of a batch: the step's compiled part."""
            with amp:  # locals, not self: a Part that held itself would outlive its call
                logits = net(xb, masks)
            loss = F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(),
                                   reduction="none").view(K, -1).mean(1)
            return loss, (logits.detach().argmax(-1) != yb).sum(1)
        self.forward, self.step = forward, compiled(forward, cfg.compile, device)
        self.loop = Loop(net, self.best, self.opt, self.schedule,
                         {"batches": self.batches, "dropout": self.dropout}, self.sel)

    def running(self) -> list[int]:
        return [k for k, s in enumerate(self.sel) if not s.stopped]

    def epoch(self, epoch: int) -> None:
        """Train every network an epoch (those stopped too, until the loop narrows), then record
        the running ones' curves and keep each one's best weights."""
        cfgs, logs, net, opt = self.cfgs, self.logs, self.net, self.opt
        cfg, K = cfgs[0], len(cfgs)
        t0 = time.perf_counter()
        order = self.batches.orders(self.n, repeats(self.n, cfg.min_epoch_examples))
        total_loss = torch.zeros(K, device=self.device)
        wrong = torch.zeros(K, device=self.device)
        for b in order.split(cfg.batch_size, dim=1):
            masks = None
            if self.dropout is not None:
                masks = [d.masks(self.dropout, b.shape[1], w) if d else None
                         for d, w in zip(self.drops, [self.x.shape[2]] + net.widths)]
            yb = self.y[self.rows, b]
            full = b.shape[1] == cfg.batch_size
            loss, batch_wrong = (self.step if full else self.forward)(self.x[self.rows, b], yb,
                                                                      masks)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # slice k of every gradient is network k's own
            if self.own_decay:
                with torch.no_grad():
                    for p in self.trained:
                        p.grad.add_(p * self.decays.view(-1, *[1] * (p.dim() - 1)))
            if self.scaled:
                before = [p.detach().clone() for p in self.trained]
            opt.step()
            if self.scaled:
                with torch.no_grad():
                    for p, q in zip(self.trained, before):
                        p.copy_(torch.lerp(q, p, self.lrs.view(-1, *[1] * (p.dim() - 1))))
            self.schedule.step()
            if self.caps is not None:
                net.cap_norms(self.caps)
            total_loss += loss.detach() * b.shape[1]
            wrong += batch_wrong
            stop_point()
        seen = order.shape[1]
        running = self.running()
        check_finite(total_loss[running], lambda j: (
            f"fine-tuning diverged: seed {cfgs[running[j]].seed} ({self.inits[running[j]]}), "
            f"epoch {epoch} has a non-finite loss; try a smaller --lr "
            f"(now {cfgs[running[j]].lr:g})"))
        val_loss, val_error = evaluate(net, *self.val, self.amp)
        stats = torch.stack([total_loss / seen, wrong / seen, val_loss, val_error])
        stats = stats.tolist()  # one host sync per epoch
        dt = time.perf_counter() - t0
        improved = torch.zeros(K, dtype=torch.bool)
        for k in running:
            sel, log = self.sel[k], logs[k]
            values = {c: stats[j][k] for j, c in enumerate(CURVES)}
            improved[k] = sel.update(epoch, values)
            log.scalars(epoch, {**{f"finetune/{c}": v for c, v in values.items()
                                   if v is not None},
                                "finetune/epoch_seconds": dt,
                                "finetune/lr": opt.param_groups[0]["lr"] * (
                                    cfgs[k].lr if self.scaled else 1)}, stage="finetune")
            log.progress(f"epoch {epoch}/{cfg.epochs}  loss {values['train_loss']:.4f}  train "
                         f"err {values['train_error']:.4f}  val err {values['val_error']:.4f}  "
                         f"{dt:.1f}s")
            if sel.stopped:
                log.progress(f"early stop: no better validation error for {cfg.patience} epochs")
            elif epoch < cfg.epochs and self.prune[k] and self.prune[k](sel.curves["val_error"]):
                sel.stopped = sel.pruned = True
                log.progress(f"pruned: validation error {100 * sel.best['val_error']:.2f}% at "
                             f"best, behind the finished trials' at epoch {epoch}")
        if improved.any():
            keep_slices(improved.to(self.device), list(net.parameters()), self.best)

    @functools.cached_property
    def untrained(self) -> list[float]:
        """Every network's validation error as it starts."""
        return evaluate(self.net, *self.val, self.amp)[1].tolist()

    def save(self, epoch: int, seconds: list[float]) -> None:
        """Each network's resume point (resume.save_points); none from here on if a save failed."""
        if not save_points(self.loop, self.folders, self.cfgs, self.device, epoch, seconds):
            self.folders = None

    def finish(self, k: int, seconds: float) -> dict:
        """Network k's result, its selected weights loaded into its model."""
        cfg, sel = self.cfgs[k], self.sel[k]
        if cfg.epochs == 0:  # the initial networks are the results
            sel.best.update(val_error=self.untrained[k])
        model = self.models[k].to(self.device)
        self.net.copy_into(k, model, self.best)
        test_error = tested(model, self.datas[k], self.amp) if cfg.read_test else None
        return sel.result(test_error=test_error, labels=len(self.idxs[k]), init=self.inits[k],
                          seed=cfg.seed, seconds=seconds)
