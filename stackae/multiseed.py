"""Fine-tuning several seeds of one ablation arm at once: their parameters stacked along a new first
dimension (torch.func.stack_module_state) and one vmapped step for all of them.

    stackae ablate --seed-batch 8 --out runs/ablate/gpu   # cells differing only in seed, 8 at once

Each seed keeps what `finetune()` gives it: its own data split and labelled subset, its batch order,
its model selection on validation error and its patience. SGD and Adam update elementwise, so one
optimizer over the stacked tensors moves each slice as a separate run would; batched and separate
runs agree to float rounding (tests/test_multiseed.py). Dropout masks come from the global
generator (vmap's randomness="different"), so with --dropout a batched seed draws different masks
than it would alone: still a valid run, not the same one.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from .config import FinetuneConfig
from .finetune import batch_order, evaluate, make_schedule
from .pretrain import autocast, make_optimizer
from .runlog import RunError, RunLog
from .seeding import generator, seed_everything

# settings that must agree for seeds to train in lockstep (seed and init may differ)
LOCKSTEP = ("labels", "epochs", "lr", "lr_schedule", "optimizer", "momentum", "weight_decay",
            "batch_size", "min_epoch_examples", "dropout", "patience", "freeze_encoder", "precision")


def check_lockstep(cfgs: list, models: list, idxs: list) -> None:
    for name in LOCKSTEP:
        values = {getattr(c, name) for c in cfgs}
        if len(values) > 1:
            raise ValueError(f"seeds fine-tuned together must share {name}; "
                             f"got {sorted(map(str, values))}")
    if len({repr(m) for m in models}) > 1:
        raise ValueError("seeds fine-tuned together must have the same architecture")
    if len({len(i) for i in idxs}) > 1:
        raise ValueError("seeds fine-tuned together must have as many labelled examples each")


@torch.no_grad()
def evaluate_slice(model: nn.Module, params: dict, i: int, data, amp) -> tuple[float, float, float]:
    """Seed i's (val loss, val error, test error): its slice copied into its own model, then the
    same `evaluate` a separate run uses."""
    for name, p in model.named_parameters():
        p.copy_(params[name][i])
    val_loss, val_error = evaluate(model, data.val_x, data.val_y, amp)
    _, test_error = evaluate(model, data.test_x, data.test_y, amp)
    return val_loss, val_error, test_error


def finetune_seeds(cfgs: list[FinetuneConfig], datas: list, models: list[nn.Module],
                   inits: list[str], idxs: list[torch.Tensor], logs: list[RunLog]) -> list[dict]:
    """`finetune(cfgs[i], datas[i], models[i], logs[i], inits[i], idxs[i])` for every i at once;
    each seed's selected state is loaded back into models[i]. A seed that stops early keeps
    training in the stack (its slice is independent of the others) but is no longer evaluated."""
    check_lockstep(cfgs, models, idxs)
    cfg, n_seeds = cfgs[0], len(cfgs)
    device = datas[0].train_x.device
    for model in models:
        model.to(device)
        if cfg.freeze_encoder:
            model.requires_grad_(False)
            [m for m in model if isinstance(m, nn.Linear)][-1].requires_grad_(True)
    params, _ = stack_module_state(models)  # new leaves; Linear/activation/Dropout have no buffers
    skeleton = copy.deepcopy(models[0]).to("meta")
    opt = make_optimizer(cfg.optimizer, [p for p in params.values() if p.requires_grad], cfg.lr,
                         cfg.momentum, cfg.weight_decay)
    schedule = make_schedule(cfg, opt, len(idxs[0]))
    x = torch.stack([d.train_x[i] for d, i in zip(datas, idxs)])  # (seeds, labels, input)
    y = torch.stack([d.train_y[i] for d, i in zip(datas, idxs)])
    rows = torch.arange(n_seeds, device=device)[:, None]
    gens = [generator(c.seed, "batches") for c in cfgs]
    amp = autocast(cfg.precision, device)

    def loss_and_logits(p, xb, yb):
        logits = functional_call(skeleton, p, (xb,))
        return F.cross_entropy(logits.float(), yb), logits
    step = torch.vmap(loss_and_logits, randomness="different")

    best = [{"val_error": math.inf, "epoch": 0, "state": None} for _ in cfgs]
    curves = [{k: [] for k in ("train_loss", "train_error", "val_loss", "val_error", "test_error")}
              for _ in cfgs]
    running = list(range(n_seeds))  # seeds not stopped early
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        if not running:
            break
        t0 = time.perf_counter()
        skeleton.train()
        total_loss = torch.zeros(n_seeds, device=device)
        wrong = torch.zeros(n_seeds, device=device, dtype=torch.long)
        seen = 0
        orders = [batch_order(x.shape[1], cfg.batch_size, cfg.min_epoch_examples, g) for g in gens]
        for bs in zip(*orders):  # the seeds' j-th batches: same size, different examples
            b = torch.stack(bs).to(device)
            yb = y[rows, b]
            with amp:
                loss, logits = step(params, x[rows, b], yb)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # slice i of each gradient is seed i's own
            opt.step()
            schedule.step()
            total_loss += loss.detach() * b.shape[1]
            wrong += (logits.detach().argmax(2) != yb).sum(1)
            seen += b.shape[1]
        train_loss = [v / seen for v in total_loss.tolist()]
        train_error = [v / seen for v in wrong.tolist()]
        for i in running:
            if not math.isfinite(train_loss[i]):
                raise RunError(f"fine-tuning seed {cfgs[i].seed} diverged: epoch {epoch} has a "
                               f"non-finite loss; try a smaller --lr (now {cfg.lr:g})")
        evals = {i: evaluate_slice(models[i], params, i, datas[i], amp) for i in running}
        dt = time.perf_counter() - t0
        for i in list(running):
            val_loss, val_error, test_error = evals[i]
            for k, v in zip(curves[i], (train_loss[i], train_error[i], val_loss, val_error,
                                        test_error)):
                curves[i][k].append(v)
            logs[i].scalars(epoch, {"finetune/train_loss": train_loss[i],
                                    "finetune/train_error": train_error[i],
                                    "finetune/val_loss": val_loss, "finetune/val_error": val_error,
                                    "finetune/test_error": test_error,
                                    "finetune/epoch_seconds": dt,
                                    "finetune/lr": opt.param_groups[0]["lr"]}, stage="finetune")
            logs[i].progress(f"epoch {epoch}/{cfg.epochs}  seed {cfgs[i].seed}  loss "
                             f"{train_loss[i]:.4f}  train err {train_error[i]:.4f}  val err "
                             f"{val_error:.4f}  test err {test_error:.4f}  {dt:.1f}s")
            if val_error < best[i]["val_error"]:
                state = {k: v.detach().clone() for k, v in models[i].state_dict().items()}
                best[i] = {"val_error": val_error, "epoch": epoch, "test_error": test_error,
                           "state": state}
            elif cfg.patience and epoch - best[i]["epoch"] >= cfg.patience:
                logs[i].progress(f"early stop: no better validation error for {cfg.patience} "
                                 "epochs")
                running.remove(i)
    seconds = (time.perf_counter() - t_start) / n_seeds  # each seed's share, so sums stay right
    results = []
    for c, d, model, init, idx, b, cv in zip(cfgs, datas, models, inits, idxs, best, curves):
        if b["state"] is not None:
            model.load_state_dict(b["state"])
        else:  # zero epochs: the initial network (models[i] was never touched) is the result
            _, b["val_error"] = evaluate(model, d.val_x, d.val_y, amp)
            _, b["test_error"] = evaluate(model, d.test_x, d.test_y, amp)
        last = {k: (v[-1] if v else None) for k, v in cv.items()}
        results.append({
            "test_error": b["test_error"], "best_epoch": b["epoch"],
            "best_val_error": b["val_error"], "final_train_error": last["train_error"],
            "final_val_error": last["val_error"], "final_test_error": last["test_error"],
            "epochs_run": len(cv["val_error"]), "labels": len(idx), "init": init,
            "seed": c.seed, "seconds": seconds, "curves": cv})
    return results


def run_finetune_seeds(cfgs: list[FinetuneConfig], outs: list[Path], device: torch.device,
                       datas: list, quiet: bool = True, hparams: dict | None = None) -> list[dict]:
    """`runner.run_finetune` for configs that differ only in seed (and init), trained together:
    each into its own folder, with its own model.pt and result.json."""
    from .data import label_subset
    from .runner import build_model, finetune_hparams, save_finetune
    seed_everything(cfgs[0].seed)  # only dropout draws from it
    built = [build_model(c, d) for c, d in zip(cfgs, datas)]
    models, inits, acts = (list(v) for v in zip(*built))
    idxs = [label_subset(d.train_y, c.label_budget, d.n_classes, c.seed)
            for c, d in zip(cfgs, datas)]
    logs = []
    try:
        for c, out in zip(cfgs, outs):
            logs.append(RunLog(out, c, device, quiet=quiet))
        results = finetune_seeds(cfgs, datas, models, inits, idxs, logs)
        for c, log, r in zip(cfgs, logs, results):
            log.hparams(*finetune_hparams(c, hparams, r))
    finally:
        for log in logs:
            log.close()
    for c, d, out, model, init, act, r in zip(cfgs, datas, outs, models, inits, acts, results):
        save_finetune(out, c, d, model, act, init, r)
    return results
