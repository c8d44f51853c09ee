import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stackae.cli import cli, main

# A small slice of the real bundled MNIST keeps CLI runs to about a second each.
SLICE = ["--train-size", "1000", "--val-size", "500", "--device", "cpu"]


@pytest.fixture(autouse=True, scope="session")
def data_cache(tmp_path_factory):
    """Decompress the bundled MNIST once per test session, away from the user's cache."""
    import os
    root = tmp_path_factory.mktemp("stackae-data")
    old = os.environ.get("STACKAE_DATA")
    os.environ["STACKAE_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("STACKAE_DATA", None)
    else:
        os.environ["STACKAE_DATA"] = old


def run_main(args, capsys, monkeypatch):
    """Run the CLI's main() as the console script does; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["stackae", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def invoke(*args):
    """Run the CLI in-process; returns click's Result."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(
        struct.pack(">I", d) for d in arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_idx_folder(folder: Path, n_train=300, n_test=100, side=8, classes=3, seed=0, gz=False):
    """Synthetic IDX data: each class a different bright quadrant, so it is learnable."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, classes, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, side, side)).astype(np.uint8)
        for c in range(classes):
            x[y == c, : side // 2 + c % 2, c * 2:(c * 2) + 3] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte{sfx}", x, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{sfx}", y, gz)
    return folder
