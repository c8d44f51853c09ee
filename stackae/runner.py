"""One whole run, from config to run folder: what `stackae pretrain`/`finetune` and each cell of
`stackae ablate` call. Inputs are checked (data, checkpoints) before the folder is created."""
from __future__ import annotations

from pathlib import Path

import torch

from . import data as data_mod
from .checkpoint import load_stack
from .config import FinetuneConfig, PretrainConfig, to_dict
from .data import label_subset
from .finetune import finetune
from .network import assemble, describe
from .pretrain import pretrain
from .runlog import RunLog, save_checkpoint, write_json
from .seeding import seed_everything

FINETUNE_HPARAMS = ("init", "init_scheme", "labels", "seed", "epochs", "lr", "lr_schedule",
                    "optimizer", "dropout", "batch_size", "freeze_encoder")


def hparams_of(cfg, names) -> dict:
    return {n: (",".join(map(str, v)) if isinstance(v := getattr(cfg, n), tuple) else v)
            for n in names}


def run_pretrain(cfg: PretrainConfig, out: Path, device: torch.device, quiet: bool = False,
                 data=None) -> dict:
    seed_everything(cfg.seed)
    data = data if data is not None else data_mod.load(cfg, device)
    log = RunLog(out, cfg, device, quiet=quiet)
    try:
        summary = pretrain(cfg, data, Path(out), log)
        log.hparams(hparams_of(cfg, ("objective", "layers", "activation", "noise", "epochs", "lr",
                                     "optimizer", "batch_size", "seed")),
                    {"hparam/val_recon_loss_top": summary["layers"][-1]["val_recon_loss"],
                     "hparam/seconds": summary["seconds"]})
    finally:
        log.close()
    return summary


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
    return model, describe(cfg.init if stack is not None else None, cfg.init_scheme), activation


def save_finetune(out: Path, cfg: FinetuneConfig, data, model, activation, init: str,
                  result: dict) -> None:
    """model.pt (the selected classifier) and result.json, each written atomically."""
    widths = [m.out_features for m in model if isinstance(m, torch.nn.Linear)][:-1]
    save_checkpoint(Path(out) / "model.pt", {
        "format": "stackae-classifier", "input_dim": data.input_dim, "n_classes": data.n_classes,
        "widths": widths, "activation": activation if isinstance(activation, str) else list(activation),
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": to_dict(cfg), "init": init})
    result["config"] = to_dict(cfg)
    write_json(Path(out) / "result.json", result)


def finetune_hparams(cfg: FinetuneConfig, extra: dict | None, result: dict) -> tuple[dict, dict]:
    """The dashboard's keys (the standard ones plus ablate's arm name) and metrics of one run."""
    return ({**hparams_of(cfg, FINETUNE_HPARAMS), **(extra or {})},
            {"hparam/test_error": result["test_error"],
             "hparam/best_val_error": result["best_val_error"]})


def run_finetune(cfg: FinetuneConfig, out: Path, device: torch.device, quiet: bool = False,
                 data=None, hparams: dict | None = None) -> dict:
    """Fine-tune one network into `out`: model.pt and result.json. `hparams` adds dashboard keys
    (ablate's arm name) to the standard ones."""
    seed_everything(cfg.seed)
    data = data if data is not None else data_mod.load(cfg, device)
    model, init, activation = build_model(cfg, data)
    labelled = label_subset(data.train_y, cfg.label_budget, data.n_classes, cfg.seed)
    log = RunLog(out, cfg, device, quiet=quiet)
    try:
        result = finetune(cfg, data, model, log, init, labelled)
        log.hparams(*finetune_hparams(cfg, hparams, result))
    finally:
        log.close()
    save_finetune(out, cfg, data, model, activation, init, result)
    return result
