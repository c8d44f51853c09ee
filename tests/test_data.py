import hashlib

import numpy as np
import pytest
import torch

from conftest import make_idx_folder, write_idx
from stackae import data as D
from stackae.config import FinetuneConfig, PretrainConfig


def test_bundled_mnist_is_verified_and_readable_by_torchvision():
    import torchvision
    root = D.bundled_mnist_root()
    for name, md5 in D.MNIST_MD5.items():
        assert hashlib.md5((root / "MNIST" / "raw" / name).read_bytes()).hexdigest() == md5
    ds = torchvision.datasets.MNIST(str(root), train=False, download=False)
    assert len(ds) == 10000


def test_load_mnist_split_and_scale():
    d = D.load(PretrainConfig(train_size=2000, val_size=1000), torch.device("cpu"))
    assert d.train_x.shape == (2000, 784) and d.val_x.shape == (1000, 784)
    assert d.test_x.shape == (10000, 784) and d.n_classes == 10 and d.image_shape == (28, 28)
    assert 0 <= float(d.train_x.min()) and float(d.train_x.max()) <= 1
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.long


def test_split_is_seeded():
    a = D.load(PretrainConfig(train_size=500, val_size=500, seed=1), torch.device("cpu"))
    b = D.load(FinetuneConfig(train_size=500, val_size=500, seed=1), torch.device("cpu"))
    c = D.load(PretrainConfig(train_size=500, val_size=500, seed=2), torch.device("cpu"))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.train_x, c.train_x)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_roundtrip(tmp_path, gz):
    folder = make_idx_folder(tmp_path / "d", gz=gz)
    xtr, ytr, xte, yte = D.read_user_data(folder)
    assert xtr.shape == (300, 64) and xte.shape == (100, 64)
    assert xtr.dtype == np.float32 and xtr.max() <= 1 and set(np.unique(ytr)) <= {0, 1, 2}
    d = D.load(PretrainConfig(data=str(folder), val_size=50), torch.device("cpu"))
    assert d.input_dim == 64 and d.n_classes == 3 and d.train_x.shape == (250, 64)


def test_npz_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=rng.random((50, 5, 4)).astype(np.float32), y_train=rng.integers(0, 4, 50),
             x_test=rng.random((20, 20)), y_test=rng.integers(0, 4, 20))
    xtr, ytr, xte, yte = D.read_user_data(p)
    assert xtr.shape == (50, 20) and xte.shape == (20, 20) and ytr.dtype == np.int64


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(D.DataError, match="bad magic number 12340801"):
        D.read_idx(p)


def test_idx_truncated(tmp_path):
    p = write_idx(tmp_path / "x", np.zeros((10, 4, 4)))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(D.DataError, match="truncated"):
        D.read_idx(p)


def test_count_mismatch(tmp_path):
    folder = make_idx_folder(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(299))
    with pytest.raises(D.DataError, match="300 images but 299 labels"):
        D.read_user_data(folder)


def test_label_subset_balanced_and_seeded():
    y = torch.arange(1000) % 10
    a = D.label_subset(y, 105, 10, seed=3)
    assert len(a) == 105 and len(set(a.tolist())) == 105
    counts = torch.bincount(y[a], minlength=10)
    assert counts.min() == 10 and counts.max() == 11
    assert torch.equal(a, D.label_subset(y, 105, 10, seed=3))
    assert not torch.equal(a, D.label_subset(y, 105, 10, seed=4))
    assert len(D.label_subset(y, None, 10, seed=3)) == 1000


@pytest.mark.parametrize("budget,match", [(5, "smaller than the 10 classes"),
                                          (2000, "exceeds the 1000")])
def test_label_subset_bad_budget(budget, match):
    with pytest.raises(D.DataError, match=match):
        D.label_subset(torch.arange(1000) % 10, budget, 10, seed=0)
