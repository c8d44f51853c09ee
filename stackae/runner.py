"""Whole runs, from configs to run folders: what `stackae pretrain`/`finetune` and the cells of
`stackae ablate` call. A group of runs that share their settings but the seed (and, for fine-tuning,
the init) trains as one K-network loop; a single run is a group of one. Inputs are checked (data,
checkpoints) before any folder is created."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as data_mod
from .checkpoint import classifier_checkpoint, load_resume, load_stack, save
from .config import FinetuneConfig, PretrainConfig, to_dict
from .data import label_subset
from .finetune import finetune
from .network import assemble, describe
from .pretrain import pretrain
from .runlog import RESUME_NAME, RunLog, write_json
from .seeding import seed_everything
from .train import matmul_precision

# where the data come from and where runs go: not hyperparameters of the dashboard
NOT_HPARAMS = ("dataset", "data", "train_size", "val_size", "device", "like")


def hparams_of(cfg) -> dict:
    """Every setting of a run, as the TensorBoard hparams dashboard wants them (scalars, strings)."""
    return {f.name: (",".join(map(str, v)) if isinstance(v := getattr(cfg, f.name), tuple) else v)
            for f in dataclasses.fields(cfg) if f.name not in NOT_HPARAMS}


def open_logs(cfgs, outs, device, quiet, resumed_after: int = 0) -> list[RunLog]:
    logs = []
    try:
        for c, out in zip(cfgs, outs):
            logs.append(RunLog(out, c, device, quiet=quiet, resumed_after=resumed_after))
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
        with matmul_precision(cfgs[0].precision):
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


@dataclass
class Net:
    """One network of a fine-tuning group: its settings, data, labelled subset, model and folder."""
    cfg: FinetuneConfig
    data: object
    out: Path
    labelled: torch.Tensor
    model: torch.nn.Sequential = None
    init: str = ""
    activation: object = None
    log: RunLog = None

    def build(self) -> "Net":
        """The classifier the config asks for: from a stack, or random init shaped like --layers
        or --like."""
        cfg, data = self.cfg, self.data
        stack = load_stack(cfg.init, data.input_dim) if cfg.init != "random" else None
        like = load_stack(cfg.like, data.input_dim) if cfg.like and stack is None else None
        source = stack or like
        widths = [l["width"] for l in like["layers"]] if like else list(cfg.layers)
        self.activation = ([l["activation"] for l in source["layers"]] if source
                           else cfg.activation)
        self.model = assemble(stack, input_dim=data.input_dim, n_classes=data.n_classes,
                              widths=widths, activation=self.activation, scheme=cfg.init_scheme,
                              dropout=cfg.dropout, seed=cfg.seed)
        self.init = describe(cfg.init if stack is not None else None, cfg.init_scheme)
        return self

    def save(self, result: dict) -> None:
        """model.pt (the selected classifier) and result.json, each written atomically; then the
        resume point goes."""
        save(Path(self.out) / "model.pt", classifier_checkpoint(self.cfg, self.data, self.model,
                                                                self.activation, self.init))
        result["config"] = to_dict(self.cfg)
        write_json(Path(self.out) / "result.json", result)
        (Path(self.out) / RESUME_NAME).unlink(missing_ok=True)


def run_finetunes(cfgs: list[FinetuneConfig], outs: list[Path], device: torch.device, datas: list,
                  quiet: bool = False, hparams: list[dict] | None = None,
                  labelled: list | None = None, prune: list | None = None) -> list[dict]:
    """Fine-tune networks that share their settings but seed and init together, each into its own
    folder with its own model.pt and result.json. `hparams` adds dashboard keys (ablate's arm
    name); `labelled` gives each network's labelled indices (drawn here when None); `prune` each
    one's pruner (finetune's)."""
    seed_everything(cfgs[0].seed)
    if labelled is None:
        labelled = [label_subset(d.train_y, c.label_budget, d.n_classes, c.seed)
                    for c, d in zip(cfgs, datas)]
    nets = [Net(c, d, Path(o), i).build() for c, d, o, i in zip(cfgs, datas, outs, labelled)]
    resumed = resume_points(cfgs, outs, device)
    after = resumed[0]["epoch"] if resumed else 0  # the logs keep the epochs done before
    for net, log in zip(nets, open_logs(cfgs, outs, device, quiet, after)):
        net.log = log
    try:
        with matmul_precision(cfgs[0].precision):
            results = finetune(cfgs, datas, [n.model for n in nets], [n.init for n in nets],
                               labelled, [n.log for n in nets], outs, resumed, prune)
        for net, r, extra in zip(nets, results, hparams or [{}] * len(nets)):
            net.log.hparams({**hparams_of(net.cfg), **extra},
                            {**({"hparam/test_error": r["test_error"]}
                                if r["test_error"] is not None else {}),
                             "hparam/best_val_error": r["best_val_error"]})
    finally:
        for net in nets:
            net.log.close()
    for net, r in zip(nets, results):
        net.save(r)
    return results


def resume_points(cfgs: list[FinetuneConfig], outs: list[Path], device) -> list[dict] | None:
    """The networks' resume points, when each folder holds one of its run after the same epoch;
    else None, and any that are there are removed (the group starts again)."""
    points = [load_resume(o, c, device) for c, o in zip(cfgs, outs)]
    if all(points) and len({p["epoch"] for p in points}) == 1:
        return points
    for o in outs:
        (Path(o) / RESUME_NAME).unlink(missing_ok=True)
    return None


def run_finetune(cfg: FinetuneConfig, out: Path, device: torch.device, quiet: bool = False,
                 data=None, hparams: dict | None = None) -> dict:
    """Fine-tune one network into `out`: model.pt and result.json."""
    data = data if data is not None else data_mod.load(cfg, device)
    return run_finetunes([cfg], [out], device, [data], quiet, [hparams or {}])[0]
