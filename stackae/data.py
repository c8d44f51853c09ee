"""Datasets as device-resident tensors: the bundled MNIST, torchvision's MNIST family, user files
(IDX, .npz, .npy, .csv) and user arrays, the last two read and checked by files.py.

`load(cfg, device)` (or `from_arrays(...)` for arrays already in memory) returns a `Data` with
train/val/test images scaled to [0, 1] (N x D float32) and integer labels, the validation split
(one sixth of the training set unless asked, at most 10,000) and training subset drawn from the
config's seed. Every problem with a file or array ends in a `DataError` naming it and what was
expected.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .files import (DataError, OptionError, checked_arrays, read_idx,
                    read_user_data)
from .seeding import generator


# MD5 of the decompressed canonical MNIST files (see stackae/datasets/mnist/README.md).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int
    name: str
    image_shape: Optional[tuple[int, int]]  # (H, W) when inputs are square-ish images, for figures

    @property
    def input_dim(self) -> int:
        return self.train_x.shape[1]


def digest(d: Data) -> str:
    """A fingerprint of the images and labels a pretraining learns from (training and validation
    split), so that a resumed run can tell whether it was given the same data."""
    h = hashlib.sha256()
    for t in (d.train_x, d.train_y, d.val_x, d.val_y):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_root() -> Path:
    """Where decompressed datasets live: $STACKAE_DATA, else ~/.cache/stackae."""
    return Path(os.environ.get("STACKAE_DATA") or Path.home() / ".cache" / "stackae")


def bundled_mnist_root() -> Path:
    """Decompress and verify the MNIST files shipped in the package into torchvision's layout
    (<root>/MNIST/raw/), once; returns <root>."""
    root = cache_root()
    raw = root / "MNIST" / "raw"
    src = resources.files("stackae") / "datasets" / "mnist"
    for name, md5 in MNIST_MD5.items():
        dest = raw / name
        if dest.exists() and dest.stat().st_size > 0:
            continue
        raw.mkdir(parents=True, exist_ok=True)
        with resources.as_file(src / f"{name}.gz") as gz:
            if not gz.exists():
                raise DataError(f"bundled MNIST file {gz} is missing; reinstall stackae")
            tmp = dest.with_suffix(f".tmp{os.getpid()}")
            with gzip.open(gz, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        digest = hashlib.md5(tmp.read_bytes()).hexdigest()
        if digest != md5:
            tmp.unlink()
            raise DataError(f"bundled MNIST file {name}.gz decompresses to MD5 {digest}, "
                            f"expected {md5}; reinstall stackae")
        os.replace(tmp, dest)
    return root


@functools.lru_cache(maxsize=4)
def _bundled_mnist() -> tuple[np.ndarray, ...]:
    """The bundled MNIST from its verified cache, read once per process (no torchvision import)."""
    raw = bundled_mnist_root() / "MNIST" / "raw"
    x, y, xt, yt = (read_idx(raw / name) for name in MNIST_MD5)
    return (x.reshape(len(x), -1).astype(np.float32) / 255, y.astype(np.int64),
            xt.reshape(len(xt), -1).astype(np.float32) / 255, yt.astype(np.int64))


def torchvision_source(name: str) -> tuple[str, dict]:
    """The torchvision dataset class (by name) and arguments of a downloadable dataset."""
    if name.startswith("emnist-"):
        return "EMNIST", {"split": name.split("-", 1)[1]}
    return {"fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}[name], {}


def raw_folder(name: str) -> Path | None:
    """Where a downloadable dataset's raw files go; None for MNIST, which ships with stackae."""
    return None if name == "mnist" else cache_root() / torchvision_source(name)[0] / "raw"


def on_this_machine(name: str) -> bool:
    raw = raw_folder(name)
    return raw is None or (raw.is_dir() and any(raw.iterdir()))


@functools.lru_cache(maxsize=2)  # a command checks the data before it creates its folder
def _torchvision_set(name: str) -> tuple[np.ndarray, ...]:
    if name == "mnist":
        return _bundled_mnist()
    import torchvision.datasets as tvd
    root = cache_root()
    cls_name, kw = torchvision_source(name)
    cls = getattr(tvd, cls_name)
    sets = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=True, **kw)
        except Exception as e:  # offline: URLError, HTTPError, RuntimeError from torchvision
            raw = raw_folder(name)
            raise DataError(f"could not load {name} ({type(e).__name__}); without network, put its "
                            f"raw files in {raw}, or pass --data with your own copy")
        x, y = ds.data.numpy(), ds.targets.numpy()
        if name.startswith("emnist"):
            x = x.transpose(0, 2, 1)  # EMNIST images are stored transposed
        sets += [x.reshape(len(x), -1), y.astype(np.int64)]
    if name == "emnist-letters":  # labels 1..26
        sets[1], sets[3] = sets[1] - 1, sets[3] - 1
    return sets[0].astype(np.float32) / 255, sets[1], sets[2].astype(np.float32) / 255, sets[3]


def validation_size(requested: Optional[int], n_train: int) -> int:
    """Images held out for validation: as asked, else one sixth of the training set, at most 10,000
    (MNIST's 60,000 give 10,000)."""
    return requested if requested is not None else min(10000, n_train // 6)


def read_arrays(cfg) -> tuple[tuple[np.ndarray, ...], str]:
    """The configured dataset's (x_train, y_train, x_test, y_test) as arrays, and its name."""
    if cfg.data:
        return read_user_data(cfg.data), str(cfg.data)
    return _torchvision_set(cfg.dataset), cfg.dataset


def check_sizes(val_size: Optional[int], train_size: Optional[int], n_images: int,
                name: str) -> tuple[int, int]:
    """(validation images, training images left after the split and --train-size); checked in the
    order the options apply, so the first one that does not fit is the one named."""
    n_val = validation_size(val_size, n_images)
    if n_val >= n_images:
        raise OptionError("--val-size", f"{n_val:,} leaves no training images: {name} has "
                          f"{n_images:,} training images")
    if n_val == 0:
        raise OptionError("--val-size", f"{name} has {n_images:,} training images, too few to "
                          "hold any out for validation (need at least 6, or --val-size)")
    left = n_images - n_val
    if train_size is not None and train_size > left:
        raise OptionError("--train-size", f"{train_size:,} exceeds the {left:,} training "
                          f"images left after the validation split of {name}")
    return n_val, (left if train_size is None else train_size)


def load(cfg, device: torch.device) -> Data:
    """Load the configured dataset, split off validation, take the training subset, move to device."""
    (xtr, ytr, xte, yte), name = read_arrays(cfg)
    return split(xtr, ytr, xte, yte, name=name, val_size=cfg.val_size, train_size=cfg.train_size,
                 seed=cfg.seed, device=device)


def from_arrays(x_train, y_train, x_test, y_test, *, val_size: Optional[int] = None,
                train_size: Optional[int] = None, seed: int = 0, device="cpu",
                name: str = "arrays") -> Data:
    """A `Data` from arrays or tensors (N x features..., labels 0..C-1), through the same checks,
    scaling and seeded validation split as files."""
    def host(a):
        return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    xtr, ytr, xte, yte = checked_arrays(*(host(a) for a in (x_train, y_train, x_test, y_test)),
                                        where=("x_train/y_train", "x_test/y_test"))
    return split(xtr, ytr, xte, yte, name=name, val_size=val_size, train_size=train_size,
                 seed=seed, device=torch.device(device))


def split(xtr, ytr, xte, yte, *, name: str, val_size: Optional[int], train_size: Optional[int],
          seed: int, device: torch.device) -> Data:
    """The seeded validation split and training subset of checked arrays, as device tensors."""
    n_classes = int(max(ytr.max(), yte.max())) + 1
    n_val, n_train = check_sizes(val_size, train_size, len(xtr), name)
    perm = torch.randperm(len(xtr), generator=generator(seed, "split")).numpy()
    val_idx, train_idx = perm[:n_val], perm[n_val:][:n_train]
    side = int(round(xtr.shape[1] ** 0.5))

    def t(a, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)
    return Data(t(xtr[train_idx]), t(ytr[train_idx], torch.long), t(xtr[val_idx]),
                t(ytr[val_idx], torch.long), t(xte), t(yte, torch.long), n_classes, name,
                (side, side) if side * side == xtr.shape[1] else None)


def check_budget(budget: Optional[int], n_train: int, n_classes: int) -> None:
    """A label budget must give every class a label and fit in the training images."""
    if budget is None:
        return
    if budget > n_train:
        raise OptionError("--labels", f"{budget} exceeds the {n_train} training images "
                          f"available")
    if budget < n_classes:
        raise OptionError("--labels", f"{budget} is smaller than the {n_classes} classes; need at "
                          f"least one label per class")


def label_subset(y: torch.Tensor, budget: Optional[int], n_classes: int, seed: int) -> torch.Tensor:
    """Indices of a seeded, class-balanced subset of `budget` labelled examples (all when None).

    Each class gets budget // n_classes (the remainder goes to a seeded choice of classes), capped
    by what the class has. The draw depends only on the seed and the labels, so every arm of an
    ablation with the same seed sees the same examples.
    """
    if budget is None:
        return torch.arange(len(y), device=y.device)
    check_budget(budget, len(y), n_classes)
    g = generator(seed, "labels")
    yc = y.cpu()
    per_class = [torch.nonzero(yc == c).flatten() for c in range(n_classes)]
    quota = torch.full((n_classes,), budget // n_classes)
    quota[torch.randperm(n_classes, generator=g)[: budget % n_classes]] += 1
    chosen = []
    for c, idx in enumerate(per_class):
        chosen.append(idx[torch.randperm(len(idx), generator=g)[: int(quota[c])]])
    out = torch.cat(chosen)
    short = budget - len(out)
    if short > 0:  # a class had fewer examples than its quota: fill from the rest
        rest = torch.ones(len(y), dtype=torch.bool)
        rest[out] = False
        pool = torch.nonzero(rest).flatten()
        out = torch.cat([out, pool[torch.randperm(len(pool), generator=g)[:short]]])
    return out.sort().values.to(y.device)
