"""The Python API, for notebooks and scripts; the `stackae` commands call these same functions.

    import stackae
    stack = stackae.pretrain_stack((x_train, y_train, x_test, y_test), layers=(256, 128), epochs=2)
    encoder = stack.encoder                        # torch.nn.Sequential, pretrained
    run = stackae.finetune_classifier(stack, data=(x_train, y_train, x_test, y_test), labels=1000)
    grid = stackae.run_ablation(labels=("100", "all"), seeds=(0, 1, 2))
    grid.dataframe()                               # one row per cell (pandas)

Settings come from a config (a config object, a dict or a JSON file such as a run's config.json)
and keyword arguments, which win; their names and defaults are the command line's. Data is a
dataset name, a path to your files, or arrays/tensors (x_train, y_train, x_test, y_test). Every
call writes a normal run folder (default runs/<command>/<date-time>).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import checkpoint
from . import data as data_mod
from .config import DATASETS, AblateConfig, ConfigError, FinetuneConfig, PretrainConfig
from .config import from_dict, load_json, to_dict
from .schema import did_you_mean
from .progress import Progress
from .runlog import prepare_folder

ARRAYS = "(arrays in memory)"  # what config.json says when the data came as arrays
NAMES = ("x_train", "y_train", "x_test", "y_test")


# ---- settings, data and folders, shared by every entry point -------------------------------

def _config(cls, config, settings: dict):
    """defaults -> `config` (object, dict or JSON file) -> keyword settings."""
    if config is None:
        base = {}
    elif isinstance(config, cls):
        base = to_dict(config)
    elif isinstance(config, dict):
        base = dict(config)
    elif isinstance(config, (str, Path)):
        base = load_json(config)
    else:
        raise TypeError(f"config must be a {cls.__name__}, a dict or a JSON file, got "
                        f"{type(config).__name__}")
    base.pop("provenance", None)
    return from_dict(cls, {**base, **settings})


def _arrays(source) -> tuple | None:
    """The four arrays when `source` is (x_train, y_train, x_test, y_test) or a dict of them."""
    if isinstance(source, dict):
        missing = [k for k in NAMES if k not in source]
        if missing:
            raise data_mod.DataError(f"data lacks {', '.join(missing)} (expected x_train, y_train, "
                                     "x_test, y_test)")
        return tuple(source[k] for k in NAMES)
    if isinstance(source, (tuple, list)):
        if len(source) != 4:
            raise data_mod.DataError(f"data must be (x_train, y_train, x_test, y_test), got "
                                     f"{len(source)} items")
        return tuple(source)
    return None


def _with_source(cfg, source):
    """The config naming where the data come from, and the data when they are already in memory
    (arrays, or a Data from load_data)."""
    if source is None:
        return cfg, None
    if isinstance(source, data_mod.Data):
        return dataclasses.replace(cfg, data=ARRAYS), source
    if (arrays := _arrays(source)) is not None:
        return dataclasses.replace(cfg, data=ARRAYS), arrays
    if isinstance(source, str) and source in DATASETS:
        return dataclasses.replace(cfg, dataset=source, data=None), None
    if isinstance(source, (str, Path)):
        if not Path(source).exists():
            raise data_mod.DataError(f"data {str(source)!r} is neither a known dataset nor an "
                                     f"existing path{did_you_mean(source, DATASETS)}")
        return dataclasses.replace(cfg, data=str(source)), None
    raise TypeError("data must be a dataset name, a path, (x_train, y_train, x_test, y_test) or a "
                    f"stackae.Data, got {type(source).__name__}")


def _load(cfg, device, held):
    """The run's Data: as given, from arrays split by the config's seed, or from the config."""
    if isinstance(held, data_mod.Data):
        return held
    if held is not None:
        return data_mod.from_arrays(*held, val_size=cfg.val_size, train_size=cfg.train_size,
                                    seed=cfg.seed, device=device)
    return data_mod.load(cfg, device)


def _folder(kind: str, out, resume: bool) -> tuple[Path, bool]:
    """The run folder (default runs/<kind>/<date-time>, made unique) and whether it resumes."""
    if out is None:
        base = Path("runs") / kind / time.strftime("%Y%m%d-%H%M%S")
        out, n = base, 1
        while out.exists():
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    out = Path(out)
    return out, prepare_folder(out, resume)


def _resumed(cls, cfg, out: Path, given: set):
    """On resume the folder's config rules; settings given now must agree with it."""
    saved = from_dict(cls, {k: v for k, v in load_json(out / "config.json").items()
                            if k not in ("provenance", "resumed")})
    for name in sorted(given):
        if name in ("data", "dataset") and cfg.data == ARRAYS:
            continue
        if getattr(cfg, name, None) != getattr(saved, name, None):
            raise ConfigError(name, f"{name}={getattr(cfg, name)!r} differs from the run being "
                                    f"resumed ({getattr(saved, name)!r} in {out / 'config.json'})")
    return saved if cfg.data != ARRAYS else dataclasses.replace(saved, data=ARRAYS)


def _given(config, settings: dict) -> set:
    """The settings a call names, which a resumed run's must agree with."""
    if config is None:
        names = set()
    elif isinstance(config, dict):
        names = set(config)
    elif isinstance(config, (str, Path)):
        names = set(load_json(config))
    else:
        names = {f.name for f in dataclasses.fields(config)}
    return (names | set(settings)) - {"provenance"}


def _device(cfg) -> torch.device:
    from .train import resolve_device
    return resolve_device(cfg.device)


# ---- a pretrained stack ---------------------------------------------------------------------

class Stack:
    """A pretrained stack (a stack.pt): its encoder as a torch module, a classifier built on it,
    its per-layer metrics and settings."""

    def __init__(self, ck: dict, path: Path | None = None, summary: dict | None = None):
        self.checkpoint, self.path, self.summary = ck, Path(path) if path else None, summary

    @classmethod
    def load(cls, path) -> "Stack":
        """A stack.pt (or the run folder holding it), checked and loaded with weights_only=True."""
        path = Path(path)
        path = path / "stack.pt" if path.is_dir() else path
        summary = path.parent / "summary.json"
        return cls(checkpoint.load_stack(path), path,
                   json.loads(summary.read_text()) if summary.exists() else None)

    def save(self, path) -> Path:
        """Write the stack to `path` (a stack.pt that `finetune --init` and `load_stack` read)."""
        checkpoint.save(path, self.checkpoint)
        self.path = Path(path)
        return self.path

    @property
    def widths(self) -> list[int]:
        return [layer["width"] for layer in self.checkpoint["layers"]]

    @property
    def input_dim(self) -> int:
        return int(self.checkpoint["input_dim"])

    @property
    def config(self) -> PretrainConfig:
        """The settings that pretrained it."""
        return from_dict(PretrainConfig, self.checkpoint["config"])

    @property
    def metrics(self) -> list[dict]:
        """Per layer: layer, width, objective, epochs, seconds, train and validation
        reconstruction loss, and the per-epoch history."""
        return self.checkpoint["metrics"]

    @property
    def encoder(self) -> nn.Sequential:
        """The pretrained hidden layers (Linear + activation each), a new module on every call."""
        return nn.Sequential(*list(self.classifier())[:-1])

    def classifier(self, n_classes: int | None = None, dropout: float = 0.0,
                   seed: int = 0) -> nn.Sequential:
        """The encoder plus a fresh linear head of `n_classes` outputs (default: the pretraining
        data's class count), seeded like `finetune`'s."""
        from .network import assemble
        return assemble(self.checkpoint, input_dim=self.input_dim,
                        n_classes=n_classes or int(self.checkpoint["n_classes"]), dropout=dropout,
                        seed=seed)

    def __repr__(self) -> str:
        widths = "-".join(map(str, [self.input_dim, *self.widths]))
        return f"Stack({widths}, {self.checkpoint.get('dataset')}, path={str(self.path)!r})"


def load_stack(path) -> Stack:
    """A pretrained stack from its stack.pt or run folder."""
    return Stack.load(path)


def pretrain_stack(data=None, config=None, *, out=None, resume: bool = False, quiet: bool = False,
                   **settings) -> Stack:
    """Pretrain a stack of autoencoders greedily, layer by layer, into a run folder.

    `data`: a dataset name ("mnist", ...), a path to your files, (x_train, y_train, x_test, y_test)
    as arrays or tensors, or a `Data`; default the config's dataset. `config` and `settings` are
    `stackae pretrain`'s settings (`layers=(500, 500)`, `epochs=5`, `objective="rbm"`, ...)."""
    cfg = _config(PretrainConfig, config, settings)
    cfg, held = _with_source(cfg, data)
    out, resuming = _folder("pretrain", out, resume)
    if resuming:
        cfg = _resumed(PretrainConfig, cfg, out, _given(config, settings))
    device = _device(cfg)
    d = _load(cfg, device, held)
    from .runner import run_pretrain
    todo = [cfg.per_layer("epochs", k) for k in range(len(cfg.layers))
            if not (out / f"layer{k + 1}.pt").exists()]
    with Progress(sum(todo) + cfg.unroll_epochs, "epoch", quiet):
        summary = run_pretrain(cfg, out, device, quiet=quiet, data=d)
    return Stack(checkpoint.load_stack(summary["stack"]), Path(summary["stack"]), summary)


# ---- a fine-tuned classifier ----------------------------------------------------------------

class Classifier:
    """A fine-tuned classifier's run: the model (a plain torch module) and its result.json."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.result = json.loads((self.folder / "result.json").read_text())
        self.model = load_model(self.folder / "model.pt")

    @property
    def test_error(self) -> float:
        """Test error at the epoch of best validation error."""
        return self.result["test_error"]

    def __repr__(self) -> str:
        return (f"Classifier(test_error={self.test_error:.4f}, labels={self.result['labels']}, "
                f"init={self.result['init']!r}, folder={str(self.folder)!r})")


def load_model(path) -> nn.Sequential:
    """A fine-tuned model.pt (or the run folder holding it) as a plain torch.nn.Sequential, in
    eval mode."""
    from .network import assemble
    path = Path(path)
    path = path / "model.pt" if path.is_dir() else path
    ck = checkpoint.load_classifier(path)
    model = assemble(None, input_dim=int(ck["input_dim"]), n_classes=int(ck["n_classes"]),
                     widths=ck["widths"], activation=ck["activation"],
                     dropout=float((ck.get("config") or {}).get("dropout", 0.0)))
    try:
        model.load_state_dict(ck["state"])
    except RuntimeError:
        raise checkpoint.CheckpointError(f"{path}: its weights do not fit the network it describes")
    return model.eval()


def finetune_classifier(init=None, data=None, config=None, *, out=None, resume: bool = False,
                        quiet: bool = False, **settings) -> Classifier:
    """Fine-tune a classifier from a pretrained stack (a `Stack` or a stack.pt path) or from random
    init ("random", the default, shaped by `layers` or by `like=` a stack), into a run folder.

    `data` as for `pretrain_stack`; `settings` are `stackae finetune`'s (`labels=1000`,
    `epochs=30`, `init_scheme="xavier"`, ...)."""
    def path_of(s):
        if isinstance(s, Stack):
            if s.path is None:
                raise ValueError("this Stack has no file; save it first (stack.save(path))")
            return str(s.path)
        return str(s) if isinstance(s, Path) else s
    given = _given(config, settings) | ({"init"} if init is not None else set())
    if init is not None:
        settings = {**settings, "init": path_of(init)}
    if "like" in settings:
        settings["like"] = path_of(settings["like"])
    cfg = _config(FinetuneConfig, config, settings)
    if cfg.init != "random" and not Path(cfg.init).exists():
        raise checkpoint.CheckpointError(f"{cfg.init} does not exist (expected a stack.pt or "
                                         "'random')")
    cfg, held = _with_source(cfg, data)
    out, resuming = _folder("finetune", out, resume)
    if resuming:
        cfg = _resumed(FinetuneConfig, cfg, out, given)
        if (out / "result.json").exists():
            return Classifier(out)
    device = _device(cfg)
    d = _load(cfg, device, held)
    from .runner import run_finetune
    with Progress(cfg.epochs, "epoch", quiet):
        run_finetune(cfg, out, device, quiet=quiet, data=d)
    return Classifier(out)


# ---- an ablation grid -----------------------------------------------------------------------

class Ablation:
    """An ablation folder: its settings, its finished cells as records or a DataFrame, and its
    report."""

    def __init__(self, folder):
        self.folder = Path(folder)

    @property
    def config(self) -> AblateConfig:
        from .ablate import load_config
        return load_config(self.folder)

    @property
    def records(self) -> list[dict]:
        """One dict per finished cell (init, kind, depth, budget, seed, labels, test_error,
        best_val_error, best_epoch, epochs_run, seconds, pretrain, folder), in cell order."""
        path, found = self.folder / "results.jsonl", {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    found[rec["id"]] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a line another shard is still writing
        return sorted(found.values(), key=lambda r: (r["seed"], r["depth"], r["init"],
                                                     _budget_key(r["budget"])))

    def dataframe(self):
        """The records as a pandas DataFrame (pandas is optional: pip install pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Ablation.dataframe() needs pandas (pip install pandas); "
                              "Ablation.records has the same rows as dicts") from None
        return pd.DataFrame.from_records(self.records)

    @property
    def finished(self) -> bool:
        """Every cell of the grid has its result."""
        grid = json.loads((self.folder / "grid.json").read_text())
        return {c["id"] for c in grid["cells"]} <= {r["id"] for r in self.records}

    @property
    def report(self) -> dict | None:
        """report.json (per condition mean, std, CI and n; per budget the paired comparisons), or
        None before the report is written."""
        path = self.folder / "report.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_report(self) -> dict:
        """Write REPORT.md, report.json, results.csv and figures/; returns report.json's content."""
        from .report import write_report
        return write_report(self.folder)

    def __repr__(self) -> str:
        return f"Ablation({str(self.folder)!r}, {len(self.records)} finished cells)"


def _budget_key(b: str) -> float:
    return float("inf") if b == "all" else int(b)


def load_ablation(folder) -> Ablation:
    """An ablation folder written by `run_ablation` or `stackae ablate` (or the shards filling it)."""
    from .runlog import RunError
    if not Path(folder).is_dir():
        raise RunError(f"{folder} is not a folder (expected an ablation folder)")
    return Ablation(folder)


def fitted_budgets(cfg: AblateConfig, sizes: dict, say=None) -> AblateConfig:
    """The grid with its label budgets checked against the data: below the class count or above
    the training images is an error in one line, except that the default budgets (MNIST's) drop
    those larger than a small data set, saying so."""
    say = say or (lambda line: None)
    n, classes = sizes["train"], sizes["classes"]
    small = [b for b in cfg.labels if b != "all" and int(b) < classes]
    if small:
        raise ConfigError("labels", f"budget {small[0]} is below the {classes} classes (at least "
                          "one label per class)")
    large = [b for b in cfg.labels if b != "all" and int(b) > n]
    if not large:
        return cfg
    if cfg.labels != AblateConfig().labels:
        raise ConfigError("labels", f"budget {large[0]} exceeds the {n:,} training images "
                          f"(use 'all' for every one)")
    keep = tuple(b for b in cfg.labels if b not in large)
    say(f"label budgets {', '.join(large)} dropped: the data have {n:,} training images "
        f"(budgets {', '.join(keep)} kept)")
    return dataclasses.replace(cfg, labels=keep)


def run_ablation(data=None, config=None, *, out=None, resume: bool = False, shard=None,
                 quiet: bool = False, **settings) -> Ablation:
    """Run an ablation grid (inits x seeds x label budgets x depths, paired by seed) into a folder,
    then write its report; an existing folder continues with `resume=True`.

    `data` as for `pretrain_stack` (arrays are saved once as <out>/data.npz, so the folder can be
    rerun and every seed draws its own split); `settings` are `stackae ablate`'s (`inits=("rbm",
    "random")`, `seeds=range(5)`, `labels=("100", "all")`, ...); `shard=(i, n)` runs slice i of
    n."""
    from . import ablate as A
    from .grid import expand, shard as shard_of
    settings = {k: (tuple(v) if isinstance(v, range) else v) for k, v in settings.items()}
    cfg = _config(AblateConfig, config, settings)
    if isinstance(data, data_mod.Data):
        raise TypeError("run_ablation needs the data's arrays or a path (each seed draws its own "
                        "validation split), not a Data")
    held = _arrays(data)
    if held is not None:
        held = data_mod.checked_arrays(*(a.detach().cpu().numpy() if isinstance(a, torch.Tensor)
                                         else np.asarray(a) for a in held),
                                       where=("x_train/y_train", "x_test/y_test"))
    else:
        cfg, _ = _with_source(cfg, data)
    out, resuming = _folder("ablate", out, resume or shard is not None)
    saved = out / "data.npz"
    if held is not None:
        cfg = dataclasses.replace(cfg, data=str(saved))
    if resuming:
        cfg = _resumed(AblateConfig, cfg, out, _given(config, settings) - {"data"})
    device = _device(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        if held is not None and not saved.exists():  # checked here, kept once the grid starts
            np.savez(Path(tmp) / "data.npz", **dict(zip(NAMES, held)))
            sizes = A.data_sizes(dataclasses.replace(cfg, data=str(Path(tmp) / "data.npz")))
        else:
            sizes = A.data_sizes(cfg)
        cfg = fitted_budgets(cfg, sizes, Progress(0, "cell", quiet).line)
        cells = expand(cfg)
        mine = shard_of(cells, *shard) if shard else cells
        A.start(cfg, out, cells, sizes, device)
        if (Path(tmp) / "data.npz").exists():
            shutil.move(Path(tmp) / "data.npz", saved)
    todo = [c for c in mine if not A.finished(out, c)]
    with Progress(len(todo), "cell", quiet) as bar:
        if len(todo) < len(mine):
            bar.line(f"{len(mine) - len(todo)} of {len(mine)} cells were already finished")
        def say(line):
            bar.line(line)
            bar.update(sum(A.finished(out, c) for c in todo))
        A.run_cells(cfg, out, mine, device, say)
    ablation = Ablation(out)
    if ablation.finished:
        ablation.write_report()
    return ablation


# ---- data -------------------------------------------------------------------------------------

def load_data(source="mnist", *, val_size: int | None = None, train_size: int | None = None,
              seed: int = 0, device="cpu") -> data_mod.Data:
    """A data set as tensors (train/val/test images scaled to [0, 1], labels), split as every run
    splits it: `source` is a dataset name, a path to your files or (x_train, y_train, x_test,
    y_test)."""
    cfg = PretrainConfig(val_size=val_size, train_size=train_size, seed=seed)
    cfg, held = _with_source(cfg, source)
    return _load(cfg, torch.device(device), held)
