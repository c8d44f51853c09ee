"""Settings for every command: one frozen dataclass each, the single source of defaults and help.

The CLI builds its options from these fields (`options.options_from`), `config.json` is
`to_dict()` of one of them, and `from_dict()` reads it back, refusing unknown keys and wrong types
(schema.py). The grid's `AblateConfig` (config_grid.py) is not written by hand: it is a sweep over
PretrainConfig and FinetuneConfig, derived from their fields, so a new setting of either reaches
every cell of a grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .schema import (ConfigError, check, coerce, field_types, from_dict, load_json,  # noqa: F401
                     opt, to_dict)

ACTIVATIONS = ("sigmoid", "tanh", "relu")
OBJECTIVES = ("plain", "denoising", "sparse", "contractive", "rbm")
CORRUPTIONS = ("masking", "salt-pepper", "gaussian")
INIT_SCHEMES = ("default", "xavier", "kaiming", "uniform")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("mnist", "fashion-mnist", "kmnist", "emnist-digits", "emnist-letters",
            "emnist-balanced", "emnist-mnist", "emnist-byclass", "emnist-bymerge")
PRECISIONS = ("float32", "tf32", "bfloat16")


def precision_option():
    """The precision setting, alike in both stages (one grid setting)."""
    return opt("float32", "Compute precision: tf32 lets CUDA matmuls round their inputs to TF32 "
               "on tensor cores (CUDA only); bfloat16 autocasts matmuls.", choices=PRECISIONS)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = opt("mnist", "Dataset: the bundled MNIST or a torchvision MNIST-family set.",
                       choices=DATASETS)
    data: Optional[str] = opt(None, "Your own data: a folder of IDX files (raw or .gz), of .npy "
                              "files (x_train, y_train, x_test, y_test) or of train.csv and "
                              "test.csv (label column 'label' or last), or an .npz with x_train, "
                              "y_train, x_test, y_test. Overrides --dataset.", path=True)
    train_size: Optional[int] = opt(None, "Use a seeded subset of this many training images "
                                    "(after the validation split); default all.")
    val_size: Optional[int] = opt(None, "Images held out of the training set for validation "
                                  "[default: one sixth of it, at most 10,000; MNIST: 10,000].")
    seed: int = opt(0, "Seed of every random stream in the run (split, subset, init, batches, noise).")
    device: str = opt("auto", "Where tensors live: auto picks CUDA when available.", choices=DEVICES)

    def __post_init__(self):
        check(self.train_size is None or self.train_size > 0, "train_size",
               f"must be a positive number of images, got {self.train_size}")
        check(self.val_size is None or self.val_size > 0, "val_size",
              f"must be positive, got {self.val_size}")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class PretrainConfig(DataConfig):
    layers: tuple[int, ...] = opt((1000, 1000, 500), "Hidden widths, bottom to top.", per_layer=False)
    activation: str = opt("sigmoid", "Hidden unit nonlinearity.", choices=ACTIVATIONS)
    objective: tuple[str, ...] = opt(("denoising",), "Layer objective; one value, or one per layer.",
                                     choices=OBJECTIVES, per_layer=True)
    tied: bool = opt(True, "Tie decoder weights to the encoder's transpose. Untied, each decoder "
                     "is a weight of its own; an RBM layer's (CD trains one matrix) starts as "
                     "its W^T and only the unrolled autoencoder trains it apart (Hinton & "
                     "Salakhutdinov 2006).")
    linear_code: bool = opt(False, "The top layer's units are linear: the real-valued code of a "
                            "deep autoencoder (Hinton & Salakhutdinov 2006); an RBM top layer "
                            "then has Gaussian hidden units of unit variance.")
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
                           "inputs, gaussian for real values (inputs are standardised; "
                           "those that hardly vary in training only centred).",
                           choices=("bernoulli", "gaussian"))
    epochs: tuple[int, ...] = opt((10,), "Epochs per layer; one value, or one per layer.",
                                  per_layer=True)
    lr: tuple[float, ...] = opt((1e-3,), "Learning rate; one value, or one per layer.", per_layer=True)
    optimizer: str = opt("adam", "Optimizer of every layer.", choices=OPTIMIZERS)
    momentum: float = opt(0.9, "Momentum of SGD, for layers of every objective (RBMs too).")
    weight_decay: float = opt(0.0, "Weight decay (L2).")
    batch_size: int = opt(256, "Minibatch size (256 keeps a 2-core CPU's matmul units busy; "
                          "see scripts/bench.py).")
    unroll_epochs: int = opt(0, "After greedy training, fine-tune the unrolled deep autoencoder "
                             "end to end for this many epochs (0 = off), keeping the epoch "
                             "of lowest validation loss.")
    precision: str = precision_option()
    compile: bool = opt(False, "Compile each layer's training step with torch.compile (on CUDA "
                        "in mode reduce-overhead: replayed as a CUDA graph); each layer pays its "
                        "compilation first, about 30 s on a CPU. RBM layers and the unrolled "
                        "autoencoder run eagerly. Results are the same to float rounding.")

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
        top = self.per_layer("objective", n - 1)
        check(not (self.linear_code and top == "sparse" and self.sparsity_penalty == "kl"),
              "sparsity_penalty",
              "the KL sparsity penalty needs activations in (0, 1); with --linear-code use l1")
        # Gaussian hidden units over Gaussian visible ones: an energy unbounded below once W's
        # spectral norm passes 1, so no proper model for CD to fit
        gaussian_below = (self.rbm_visible == "gaussian" if n == 1 else
                          self.per_layer("objective", n - 2) != "rbm"
                          and self.activation != "sigmoid")
        check(not (self.linear_code and top == "rbm" and gaussian_below), "linear_code",
              "a top RBM with linear (Gaussian) hidden units needs binary visible units: inputs "
              "in [0, 1] (a sigmoid or RBM layer below it, or --rbm-visible bernoulli)")
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
    weight_decay: float = opt(0.0, "Weight decay (L2).")
    batch_size: int = opt(128, "Minibatch size.")
    min_epoch_examples: int = opt(10000, "An epoch passes over the labelled set repeatedly until it "
                                  "has seen at least this many examples (small budgets still get "
                                  "updates between validations).")
    dropout: float = opt(0.0, "Dropout probability on hidden layers during fine-tuning.")
    input_dropout: float = opt(0.0, "Dropout probability on the inputs during fine-tuning "
                               "(Srivastava et al. 2014 used 0.2 on MNIST).")
    max_norm: float = opt(0.0, "Cap on the L2 norm of each hidden unit's incoming weights, applied "
                          "after every step (0 = off; Srivastava et al. 2014 used 3 to 4).")
    patience: int = opt(0, "Stop after this many epochs without a better validation error "
                        "(0 = run every epoch).")
    freeze_encoder: bool = opt(False, "Train only the head (a linear probe of the encoder).")
    precision: str = precision_option()
    compile: bool = opt(False, "Compile the training step with torch.compile (on CUDA in mode "
                        "reduce-overhead: replayed as a CUDA graph); the first step pays the "
                        "compilation, about 30 s on a CPU. Results are the same to float "
                        "rounding.")
    read_test: bool = opt(True, "Read the test error once, after training, on the selected "
                          "network (that of the best validation epoch). stackae tune turns it "
                          "off for its trials, so no choice ever sees the test set.")

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
        check(0 <= self.input_dropout < 1, "input_dropout",
              f"must be in [0, 1), got {self.input_dropout}")
        check(self.max_norm >= 0 and math.isfinite(self.max_norm), "max_norm",
              f"must be >= 0, got {self.max_norm}")
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


# fine-tuning settings that may differ between the K networks of one loop (every other one must
# agree): what a cell sets, and what the step can apply per network (tuning trials)
PER_NETWORK = ("seed", "init", "init_scheme", "like", "lr", "weight_decay", "dropout",
               "input_dropout", "max_norm")
# settings of how a run executes, not of what it computes: a resumed run or a joining shard may
# change them, and a stack trained either way is the same stack
PROVENANCE_KEYS = ("provenance", "resumed")  # what a saved config.json holds beside the settings
RUN_ONLY = ("compile", "seed_batch",  # seed_batch: results are the same however batched
            "stacks_from")  # a stack copied is the stack its settings would pretrain
