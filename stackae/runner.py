"""Whole runs, from configs to run folders: what `stackae pretrain`/`finetune` and the cells of
`stackae ablate` call. A group of runs that share their settings but the seed (and, for fine-tuning,
the init) trains as one K-network loop; a single run is a group of one. Inputs are checked (data,
checkpoints) before any folder is created."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from . import data as data_mod
from .checkpoint import classifier_checkpoint, load_stack, save
from .config import FinetuneConfig, PretrainConfig, to_dict
from .data import label_subset
from .finetune import finetune
from .network import assemble, describe
from .pretrain import pretrain
from .runlog import RunLog, write_json
from .seeding import seed_everything

# where the data come from and where runs go: not hyperparameters of the dashboard
NOT_HPARAMS = ("dataset", "data", "train_size", "val_size", "device", "like")


def hparams_of(cfg) -> dict:
    """Every setting of a run, as the TensorBoard hparams dashboard wants them (scalars, strings)."""
    return {f.name: (",".join(map(str, v)) if isinstance(v := getattr(cfg, f.name), tuple) else v)
            for f in dataclasses.fields(cfg) if f.name not in NOT_HPARAMS}


def open_logs(cfgs, outs, device, quiet) -> list[RunLog]:
    logs = []
    try:
        for c, out in zip(cfgs, outs):
            logs.append(RunLog(out, c, device, quiet=quiet))
    except BaseException:
        for log in logs:
            log.close()
        raise
    return logs


def run_pretrains(cfgs: list[PretrainConfig], outs: list[Path], device: torch.device,
                  datas: list, quiet: bool = False) -> list[dict]:
    """Pretrain stacks that differ only in seed together, each into its own folder."""
    seed_everything(cfgs[0].seed)
    logs = open_logs(cfgs, outs, device, quiet)
    try:
        summaries = pretrain(cfgs, datas, [Path(o) for o in outs], logs)
        for c, log, s in zip(cfgs, logs, summaries):
            log.hparams(hparams_of(c), {"hparam/val_recon_loss_top": s["layers"][-1]["val_recon_loss"],
                                        "hparam/seconds": s["seconds"]})
    finally:
        for log in logs:
            log.close()
    return summaries


def run_pretrain(cfg: PretrainConfig, out: Path, device: torch.device, quiet: bool = False,
                 data=None) -> dict:
    data = data if data is not None else data_mod.load(cfg, device)
    return run_pretrains([cfg], [out], device, [data], quiet)[0]


def build_model(cfg: FinetuneConfig, data) -> tuple[torch.nn.Sequential, str, str | list]:
    """The classifier `cfg` asks for (from a stack, or random init shaped like --layers or
    --like), its init's description and its activation(s)."""
    stack = load_stack(cfg.init, data.input_dim) if cfg.init != "random" else None
    like = load_stack(cfg.like, data.input_dim) if cfg.like and stack is None else None
    widths = [l["width"] for l in like["layers"]] if like else list(cfg.layers)
    activation = [l["activation"] for l in like["layers"]] if like else cfg.activation
    model = assemble(stack, input_dim=data.input_dim, n_classes=data.n_classes, widths=widths,
                     activation=activation, scheme=cfg.init_scheme, dropout=cfg.dropout,
                     seed=cfg.seed)
    if stack is not None:
        activation = [l["activation"] for l in stack["layers"]]
    return model, describe(cfg.init if stack is not None else None, cfg.init_scheme), activation


def save_finetune(out: Path, cfg: FinetuneConfig, data, model, activation, init: str,
                  result: dict) -> None:
    """model.pt (the selected classifier) and result.json, each written atomically."""
    save(Path(out) / "model.pt", classifier_checkpoint(cfg, data, model, activation, init))
    result["config"] = to_dict(cfg)
    write_json(Path(out) / "result.json", result)


def run_finetunes(cfgs: list[FinetuneConfig], outs: list[Path], device: torch.device, datas: list,
                  quiet: bool = False, hparams: list[dict] | None = None,
                  labelled: list | None = None) -> list[dict]:
    """Fine-tune networks that share their settings but seed and init together, each into its own
    folder with its own model.pt and result.json. `hparams` adds dashboard keys (ablate's arm
    name); `labelled` gives each network's labelled indices (drawn here when None)."""
    seed_everything(cfgs[0].seed)
    built = [build_model(c, d) for c, d in zip(cfgs, datas)]
    models, inits, acts = (list(v) for v in zip(*built))
    if labelled is None:
        labelled = [label_subset(d.train_y, c.label_budget, d.n_classes, c.seed)
                    for c, d in zip(cfgs, datas)]
    logs = open_logs(cfgs, outs, device, quiet)
    try:
        results = finetune(cfgs, datas, models, inits, labelled, logs)
        for c, log, r, extra in zip(cfgs, logs, results, hparams or [{}] * len(cfgs)):
            log.hparams({**hparams_of(c), **extra}, {"hparam/test_error": r["test_error"],
                                                     "hparam/best_val_error": r["best_val_error"]})
    finally:
        for log in logs:
            log.close()
    for c, d, out, model, init, act, r in zip(cfgs, datas, outs, models, inits, acts, results):
        save_finetune(out, c, d, model, act, init, r)
    return results


def run_finetune(cfg: FinetuneConfig, out: Path, device: torch.device, quiet: bool = False,
                 data=None, hparams: dict | None = None) -> dict:
    """Fine-tune one network into `out`: model.pt and result.json."""
    data = data if data is not None else data_mod.load(cfg, device)
    return run_finetunes([cfg], [out], device, [data], quiet, [hparams or {}])[0]
