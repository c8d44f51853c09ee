"""What runs leave behind, as objects: a pretrained stack, a fine-tuned classifier and an ablation
folder, with the loaders that read them back (stack.pt, model.pt, an ablation folder)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from . import checkpoint
from .autoencoders import ACT
from .config import PretrainConfig, from_dict
from .config_grid import AblateConfig


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
        if n_classes is not None and (not isinstance(n_classes, int) or n_classes < 2):
            raise ValueError(f"n_classes must be an integer of at least 2, got {n_classes!r}")
        return assemble(self.checkpoint, input_dim=self.input_dim,
                        n_classes=n_classes or int(self.checkpoint["n_classes"]), dropout=dropout,
                        seed=seed)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (N x features) encoded through every layer and decoded back down through each
        layer's decoder: the deep autoencoder's reconstruction, in the input space (after
        `unroll_epochs`, the unrolled autoencoder's)."""
        layers = self.checkpoint["layers"]
        if any(layer.get("standardize") for layer in layers):
            raise checkpoint.CheckpointError("reconstruct does not support stacks with Gaussian "
                                             "RBM layers (standardised inputs)")
        h = torch.as_tensor(x).reshape(len(x), -1).float()  # numpy arrays too
        if h.shape[1] != self.input_dim:
            raise ValueError(f"reconstruct needs inputs of {self.input_dim} features (the stack's "
                             f"input width), got {h.shape[1]}")
        for layer in layers:
            h = ACT[layer["activation"]](h @ layer["weight"].T + layer["bias"])
        for j in reversed(range(len(layers))):
            layer = layers[j]
            w = layer["decoder_weight"] if "decoder_weight" in layer else layer["weight"].T
            h = h @ w.T + layer["decoder_bias"]
            below = "sigmoid" if j == 0 else layers[j - 1]["activation"]  # stacks before "output"
            if layer.get("output", "sigmoid" if below == "sigmoid" else "linear") == "sigmoid":
                h = torch.sigmoid(h)
        return h

    def __repr__(self) -> str:
        widths = "-".join(map(str, [self.input_dim, *self.widths]))
        return f"Stack({widths}, {self.checkpoint.get('dataset')}, path={str(self.path)!r})"


def load_stack(path) -> Stack:
    """A pretrained stack from its stack.pt or run folder."""
    return Stack.load(path)


# ---- a fine-tuned classifier ----------------------------------------------------------------

class Classifier:
    """A fine-tuned classifier's run: the model (a plain torch module) and its result.json."""

    def __init__(self, folder):
        from .runlog import RunError
        self.folder = Path(folder)
        if not (self.folder / "result.json").exists():
            raise RunError(f"{self.folder} holds no result.json: not a finished fine-tuning run "
                           f"(expected a `stackae finetune` folder)")
        self.result = json.loads((self.folder / "result.json").read_text())
        self.model = load_model(self.folder / "model.pt")

    @property
    def test_error(self) -> float | None:
        """Test error at the epoch of best validation error (None when run with read_test off)."""
        return self.result["test_error"]

    def __repr__(self) -> str:
        error = (f"test_error={self.test_error:.4f}" if self.test_error is not None
                 else f"best_val_error={self.result['best_val_error']:.4f}")
        return (f"Classifier({error}, labels={self.result['labels']}, "
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
    def cells(self) -> list[str]:
        """The ids of the grid's cells (grid.json), finished or not."""
        grid = json.loads((self.folder / "grid.json").read_text())
        return [c["id"] for c in grid["cells"]]

    @property
    def finished(self) -> bool:
        """Every cell of the grid has its result."""
        return set(self.cells) <= {r["id"] for r in self.records}

    @property
    def report(self) -> dict | None:
        """report.json (per condition mean, std, CI and n; per budget the paired comparisons), or
        None before the report is written. A tuning's report written before its final cells ran
        holds its trials so far instead ("in_progress": true, report_tuning.py)."""
        path = self.folder / "report.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_report(self) -> dict:
        """Write REPORT.md, report.json, results.csv and figures/; returns report.json's content
        (of a tuning whose final cells have not run: REPORT.md, report.json and the tuning figure
        of its trials so far)."""
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
    if not any((Path(folder) / f).exists() for f in ("grid.json", "results.jsonl")):
        raise RunError(f"{folder} has no results (expected grid.json and results.jsonl, written "
                       f"by stackae ablate or tune); not an ablation folder")
    return Ablation(folder)
