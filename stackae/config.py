"""Settings for every command: one frozen dataclass each, the single source of defaults and help.

The CLI builds its options from these fields (`options.options_from`), `config.json` is
`to_dict()` of one of them, and `from_dict()` reads it back, refusing unknown keys and wrong types.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ACTIVATIONS = ("sigmoid", "tanh", "relu")
OBJECTIVES = ("plain", "denoising", "sparse", "contractive", "rbm")
CORRUPTIONS = ("masking", "salt-pepper", "gaussian")
INIT_SCHEMES = ("default", "xavier", "kaiming", "uniform")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist-digits", "emnist-letters",
            "emnist-balanced", "emnist-mnist", "emnist-byclass", "emnist-bymerge")


class ConfigError(ValueError):
    """A setting with a bad value; `name` is the field, so the CLI can name the option."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def opt(default, help: str, **meta):
    """A config field: its default, its one-line help (also the CLI's), and CLI hints (choices...)."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults so configs stay frozen")
    return field(default=default, metadata={"help": help, **meta})


def check(cond: bool, name: str, message: str):
    if not cond:
        raise ConfigError(name, message)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = opt("mnist", "Dataset: the bundled MNIST or a torchvision MNIST-family set.",
                       choices=DATASETS)
    data: Optional[str] = opt(None, "Your own data: a folder of IDX files (raw or .gz) or an .npz "
                              "with x_train, y_train, x_test, y_test. Overrides --dataset.", path=True)
    train_size: Optional[int] = opt(None, "Use a seeded subset of this many training images "
                                    "(after the validation split); default all.")
    val_size: int = opt(10000, "Images held out of the training set for validation.")
    seed: int = opt(0, "Seed of every random stream in the run (split, subset, init, batches, noise).")
    device: str = opt("auto", "Where tensors live: auto picks CUDA when available.", choices=DEVICES)

    def __post_init__(self):
        check(self.train_size is None or self.train_size > 0, "train_size",
               f"must be a positive number of images, got {self.train_size}")
        check(self.val_size > 0, "val_size", f"must be positive, got {self.val_size}")


@dataclass(frozen=True)
class PretrainConfig(DataConfig):
    layers: tuple[int, ...] = opt((1000, 1000, 500), "Hidden widths, bottom to top.", per_layer=False)
    activation: str = opt("sigmoid", "Hidden unit nonlinearity.", choices=ACTIVATIONS)
    objective: tuple[str, ...] = opt(("denoising",), "Layer objective; one value, or one per layer.",
                                     choices=OBJECTIVES, per_layer=True)
    tied: bool = opt(True, "Tie decoder weights to the encoder's transpose.")
    loss: str = opt("auto", "Reconstruction loss; auto = cross-entropy when a layer's inputs lie in "
                    "[0, 1], else squared error.", choices=("auto", "cross-entropy", "mse"))
    noise: tuple[float, ...] = opt((0.25,), "Corruption level of denoising layers (fraction for "
                                   "masking/salt-pepper, std for gaussian); one or per layer.",
                                   per_layer=True)
    corruption: str = opt("masking", "Corruption of denoising layers.", choices=CORRUPTIONS)
    sparsity_target: float = opt(0.05, "Target mean activation rho of sparse layers (KL penalty).")
    sparsity_weight: float = opt(1.0, "Weight beta of the sparsity penalty.")
    sparsity_penalty: str = opt("kl", "Sparsity penalty: KL(rho || mean activation) or L1 of "
                                "activations.", choices=("kl", "l1"))
    contraction: float = opt(0.1, "Weight lambda of the contractive penalty ||dh/dx||_F^2.")
    cd_k: int = opt(1, "Gibbs steps k of contrastive divergence for RBM layers.")
    persistent: bool = opt(False, "RBM layers use persistent CD (chains kept across batches).")
    rbm_visible: str = opt("bernoulli", "Visible units of a first-layer RBM: bernoulli for [0,1] "
                           "inputs, gaussian for real values (inputs are standardised).",
                           choices=("bernoulli", "gaussian"))
    epochs: tuple[int, ...] = opt((10,), "Epochs per layer; one value, or one per layer.",
                                  per_layer=True)
    lr: tuple[float, ...] = opt((1e-3,), "Learning rate; one value, or one per layer.", per_layer=True)
    optimizer: str = opt("adam", "Optimizer of every layer.", choices=OPTIMIZERS)
    momentum: float = opt(0.9, "Momentum of SGD (and of RBM updates).")
    weight_decay: float = opt(0.0, "L2 weight decay.")
    batch_size: int = opt(256, "Minibatch size (256 keeps a 2-core CPU's matmul units busy; "
                          "see scripts/bench.py).")
    unroll_epochs: int = opt(0, "After greedy training, fine-tune the unrolled deep autoencoder "
                             "end to end for this many epochs (0 = off).")
    precision: str = opt("float32", "Compute precision: bfloat16 autocasts matmuls.",
                         choices=("float32", "bfloat16"))

    def __post_init__(self):
        super().__post_init__()
        check(len(self.layers) > 0, "layers", "needs at least one hidden width")
        for w in self.layers:
            check(w > 0, "layers", f"widths must be positive integers, got {w}")
        n = len(self.layers)
        for name in ("objective", "noise", "epochs", "lr"):
            v = getattr(self, name)
            check(len(v) in (1, n), name, f"needs one value or one per layer ({n}), got {len(v)}")
        for v in self.noise:
            if self.corruption == "gaussian":
                check(0 <= v and math.isfinite(v), "noise", f"must be >= 0, got {v}")
            else:
                check(0 <= v < 1, "noise", f"must be in [0, 1), got {v}")
        for v in self.epochs:
            check(v >= 0, "epochs", f"must be >= 0, got {v}")
        for v in self.lr:
            check(v > 0 and math.isfinite(v), "lr", f"must be positive, got {v}")
        check(0 < self.sparsity_target < 1, "sparsity_target",
               f"rho must be in (0, 1), got {self.sparsity_target}")
        check(self.sparsity_weight >= 0, "sparsity_weight",
               f"beta must be >= 0, got {self.sparsity_weight}")
        check(self.contraction >= 0, "contraction", f"must be >= 0, got {self.contraction}")
        check(self.cd_k >= 1, "cd_k", f"k must be >= 1, got {self.cd_k}")
        check(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.batch_size > 0, "batch_size", f"must be positive, got {self.batch_size}")
        for k in range(n):
            kind = self.per_layer("objective", k)
            check(not (kind == "sparse" and self.sparsity_penalty == "kl"
                        and self.activation == "relu"), "sparsity_penalty",
                   "the KL sparsity penalty needs activations in (0, 1); with relu use l1")
        check(self.unroll_epochs >= 0, "unroll_epochs", f"must be >= 0, got {self.unroll_epochs}")

    def per_layer(self, name: str, k: int):
        """Value of a per-layer setting for layer k (0-based); one value applies to all layers."""
        v = getattr(self, name)
        return v[k] if len(v) > 1 else v[0]


@dataclass(frozen=True)
class FinetuneConfig(DataConfig):
    init: str = opt("random", "A stack checkpoint (stack.pt) to start from, or 'random'.")
    init_scheme: str = opt("default", "Random-init scheme for hidden layers when --init random: "
                           "torch default, xavier (Glorot), kaiming (He), uniform "
                           "(U(+-1/sqrt(fan_in)), zero biases, as in Erhan et al. 2010).",
                           choices=INIT_SCHEMES)
    layers: tuple[int, ...] = opt((1000, 1000, 500), "Hidden widths for --init random (ignored when "
                                  "--init is a checkpoint, or when --like gives them).")
    activation: str = opt("sigmoid", "Hidden nonlinearity for --init random.", choices=ACTIVATIONS)
    like: Optional[str] = opt(None, "Copy widths and activation from this stack checkpoint, so a "
                              "random-init arm matches a pretrained one exactly.", path=True)
    labels: str = opt("all", "Label budget: a number of labelled training images (seeded, "
                      "class-balanced), or 'all'.")
    epochs: int = opt(30, "Fine-tuning epochs.")
    lr: float = opt(0.1, "Learning rate.")
    lr_schedule: str = opt("constant", "Learning rate over the run: constant, or cosine decay "
                           "from --lr to 0 at the last step of the last epoch.",
                           choices=LR_SCHEDULES)
    optimizer: str = opt("sgd", "Optimizer.", choices=OPTIMIZERS)
    momentum: float = opt(0.9, "Momentum of SGD.")
    weight_decay: float = opt(0.0, "L2 weight decay.")
    batch_size: int = opt(128, "Minibatch size.")
    min_epoch_examples: int = opt(10000, "An epoch passes over the labelled set repeatedly until it "
                                  "has seen at least this many examples (small budgets still get "
                                  "updates between validations).")
    dropout: float = opt(0.0, "Dropout probability on hidden layers during fine-tuning.")
    patience: int = opt(0, "Stop after this many epochs without a better validation error "
                        "(0 = run every epoch).")
    freeze_encoder: bool = opt(False, "Train only the head (a linear probe of the encoder).")
    precision: str = opt("float32", "Compute precision: bfloat16 autocasts matmuls.",
                         choices=("float32", "bfloat16"))

    def __post_init__(self):
        super().__post_init__()
        for w in self.layers:
            check(w > 0, "layers", f"widths must be positive integers, got {w}")
        check(self.label_budget is None or self.label_budget > 0, "labels",
               f"must be a positive integer or 'all', got {self.labels!r}")
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        check(self.lr > 0 and math.isfinite(self.lr), "lr", f"must be positive, got {self.lr}")
        check(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.batch_size > 0, "batch_size", f"must be positive, got {self.batch_size}")
        check(self.min_epoch_examples >= 0, "min_epoch_examples",
               f"must be >= 0, got {self.min_epoch_examples}")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.patience >= 0, "patience", f"must be >= 0, got {self.patience}")

    @property
    def label_budget(self) -> Optional[int]:
        """The label budget as a number, None for all labels."""
        if str(self.labels).lower() == "all":
            return None
        try:
            return int(self.labels)
        except ValueError:
            raise ConfigError("labels", f"must be a positive integer or 'all', got {self.labels!r}")


# ---- JSON round trip ------------------------------------------------------------------------

def to_dict(cfg) -> dict:
    return {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v)
            for f in dataclasses.fields(cfg)}


def field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(name: str, tp, value):
    """Check `value` (from JSON or a flag) against a field's type; per-layer tuples accept a scalar
    or a list. Raises ConfigError naming the field."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v != ""] if value else []
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(coerce(name, item, v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, tp)
    raise ConfigError(name, f"expected {kind}, got {value!r}")


def from_dict(cls, d: dict, *, ignore: tuple[str, ...] = ()):
    """Build `cls` from a dict, refusing unknown keys and wrong types (keys in `ignore` are skipped:
    the provenance fields that `config.json` carries)."""
    types = field_types(cls)
    unknown = sorted(set(d) - set(types) - set(ignore))
    if unknown:
        raise ConfigError(unknown[0], f"unknown setting {unknown[0]!r} (known: {', '.join(types)})")
    kwargs = {}
    for name, tp in types.items():
        if name in d:
            kwargs[name] = coerce(name, tp, d[name])
            choices = dataclasses.fields(cls)[list(types).index(name)].metadata.get("choices")
            vals = kwargs[name] if isinstance(kwargs[name], tuple) else (kwargs[name],)
            for v in vals:
                if choices and v not in choices:
                    raise ConfigError(name, f"{v!r} is not one of {', '.join(choices)}")
    return cls(**kwargs)


def load_json(path: str | Path) -> dict:
    """Read a JSON object from a config file; errors name the file."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror}")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("config", f"{path} is not valid JSON ({e.msg} at line {e.lineno})")
    if not isinstance(d, dict):
        raise ConfigError("config", f"{path} must hold a JSON object of settings")
    return d
