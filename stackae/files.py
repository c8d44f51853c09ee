"""The user's data files and arrays: readers for IDX (raw or .gz), .npz, .npy and .csv, and the
checks every array passes before it becomes tensors (shapes, counts, integer labels 0..C-1,
matching widths, pixel range), each failure a DataError naming the file or array and what was
expected. data.py turns the checked arrays into a split `Data`.
"""
from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

import numpy as np


class DataError(Exception):
    """A data file or option that cannot be used; the message names it and says what was expected."""


class OptionError(DataError):
    """An option whose value does not fit the data (e.g. --labels 5 for 10 classes): a usage error,
    exit status 2 in every command; `option` is the flag to name."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz) into an array; errors name the file and the problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}")
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a damaged gzip file ({e})")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path} is not an IDX file: bad magic number {raw[:4].hex() or '(empty)'}, "
                        "expected 0000 then a type code (08 for uint8) and a dimension count")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header needs {header} bytes, file has {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    need = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != need:
        what = "truncated" if len(raw) < need else "longer than its header says"
        raise DataError(f"{path} is {what}: header {shape} needs {need} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, split: str, kind: str) -> Path:
    """The IDX file of a split ('train'/'t10k') and kind ('images'/'labels') in a folder."""
    prefixes = {"train": ("train",), "test": ("t10k", "test")}[split]
    hits = sorted(p for p in folder.iterdir() if p.is_file()
                  and p.name.startswith(prefixes) and kind in p.name and "idx" in p.name)
    if not hits:
        raise DataError(f"{folder} has no {split} {kind} IDX file (expected a name like "
                        f"{prefixes[0]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte[.gz])")
    return hits[0]


def _check_pair(x: np.ndarray, y: np.ndarray, where: str,
                labels_where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One split's images and labels checked; messages about the labels name `labels_where`
    (their own file) when given, the rest `where`."""
    lw = labels_where or where
    if x.ndim < 2:
        raise DataError(f"{where}: images must have at least 2 dimensions (N, features...), "
                        f"got shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{lw}: labels must be a 1-D array, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels; counts must match")
    if len(x) == 0:
        raise DataError(f"{where}: the set is empty")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y))
                and np.all(y == np.round(y))):
            raise DataError(f"{lw}: labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{lw}: labels must be integers >= 0, found {int(y.min())}")
    x = x.reshape(len(x), -1)
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise DataError(f"{where}: images contain NaN or Inf")
    return x, y.astype(np.int64)


def check_classes(y: np.ndarray, where: str) -> None:
    """Labels are class indices 0..C-1: at least two classes, and no more classes than images
    (a stray huge label would otherwise size the classifier's head, and a single class would
    fine-tune to a meaningless 0% error)."""
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"{where}: every training label is {int(present[0])}; classification needs "
                        f"at least two classes")
    if int(y.max()) + 1 > len(y):
        raise DataError(f"{where}: labels go up to {int(y.max())}, which means {int(y.max()) + 1:,} "
                        f"classes for {len(y):,} images; labels must be class indices 0..C-1")
    missing = np.setdiff1d(np.arange(int(y.max()) + 1), present)
    if len(missing):  # e.g. labels 1..10: the head would get a class no image has
        first = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        hint = (f"; labels {int(present[0])}..{int(present[-1])} look shifted: subtract "
                f"{int(present[0])}" if int(present[0]) > 0
                and len(present) == int(present[-1]) - int(present[0]) + 1 else "")
        raise DataError(f"{where}: no training image has label {first}, so the classifier would "
                        f"have a class it never sees; labels must be class indices 0..C-1, each "
                        f"present{hint}")


def _scale(x: np.ndarray, where: str) -> np.ndarray:
    """Pixels to float32 in [0, 1]: integers as 8-bit intensities, floats must already be in [0, 1]."""
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"{where}: integer pixels must be in [0, 255], found "
                            f"[{x.min()}, {x.max()}]")
        return x.astype(np.float32) / 255.0
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{where}: float pixels must be in [0, 1], found [{x.min():.3g}, "
                        f"{x.max():.3g}]; rescale them first")
    return x.astype(np.float32)


USER_FORMATS = ("a folder of IDX files (train-images-idx3-ubyte[.gz], ...), a folder of .npy "
                "files (x_train, y_train, x_test, y_test), a folder with train.csv and test.csv, "
                "or an .npz with x_train, y_train, x_test, y_test")
NAMES = ("x_train", "y_train", "x_test", "y_test")


def read_user_data(path: str | Path) -> tuple[np.ndarray, ...]:
    """x_train, y_train, x_test, y_test from a folder (IDX, .npy or .csv files) or an .npz, checked
    and scaled like every other source (`checked_arrays`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist (expected {USER_FORMATS})")
    if path.is_dir():
        if (path / "x_train.npy").exists():
            parts = [_read_npy(path / f"{k}.npy") for k in NAMES]
            where = [(str(path / f"x_{s}.npy"), str(path / f"y_{s}.npy")) for s in ("train", "test")]
        elif (path / "train.csv").exists():
            (xtr, ytr, head), (xte, yte, test_head) = (_read_csv(path / f"{s}.csv")
                                                       for s in ("train", "test"))
            if head != test_head:  # the label column would be another column in one of them
                has, lacks = ("train", "test") if head else ("test", "train")
                raise DataError(f"{path / (lacks + '.csv')} has no header row but "
                                f"{path / (has + '.csv')} has one; give both a header (with a "
                                f"'label' column) or neither (the label last)")
            parts, where = [xtr, ytr, xte, yte], [str(path / "train.csv"), str(path / "test.csv")]
        elif [p for p in path.iterdir() if p.suffix in (".npy", ".npz")]:
            found = sorted(p.name for p in path.iterdir() if p.suffix in (".npy", ".npz"))
            raise DataError(f"{path} holds {', '.join(found[:4])}{' ...' if len(found) > 4 else ''}"
                            f" but no x_train.npy (expected x_train, y_train, x_test and y_test "
                            f".npy files, names as written; an .npz is given as the file itself)")
        else:
            parts = [read_idx(_find_idx(path, s, k)) for s in ("train", "test")
                     for k in ("images", "labels")]
            where = [str(_find_idx(path, s, "images")) for s in ("train", "test")]
    elif path.suffix == ".npy":
        raise DataError(f"{path}: a single .npy file cannot hold images and labels; give the folder "
                        "holding x_train.npy, y_train.npy, x_test.npy and y_test.npy")
    elif path.suffix == ".csv":
        raise DataError(f"{path}: give the folder holding train.csv and test.csv")
    else:
        parts = _read_npz(path)
        where = [f"{path} (train)", f"{path} (test)"]
    return checked_arrays(*parts, where=where, path=path)


def _read_npz(path: Path) -> list[np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a readable .npz file (expected a zip archive written by "
                        "numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NAMES if k not in z]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)} (expected x_train, "
                                "y_train, x_test, y_test)")
            parts = [z[k] for k in NAMES]
        bad = [k for k, v in zip(NAMES, parts) if not isinstance(v, np.ndarray)]
        if bad:
            raise DataError(f"{path}: {bad[0]} is not a numpy array (expected numpy.savez output)")
    except DataError:
        raise
    except ValueError:
        raise DataError(f"{path} holds object (pickled) arrays, which are not loaded; save "
                        "plain numeric arrays")
    except Exception as e:  # zipfile, EOF, pickle and format errors all mean "not an .npz"
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})")
    return parts


def _read_npy(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path.parent} has x_train.npy but no {path.name} (expected x_train, "
                        "y_train, x_test and y_test .npy files)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:
        raise DataError(f"{path} holds an object (pickled) array, which is not loaded; save a "
                        "plain numeric array")
    except Exception as e:
        raise DataError(f"{path} is not a readable .npy file ({type(e).__name__}: {e})")


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """Features and labels of a CSV: one example per row, the label in the column named 'label'
    (when the first row is a header) or else the last column. Values that are all whole numbers
    above 1 are read as 8-bit pixels; others must be in [0, 1]. A byte-order mark (as Excel
    writes) is skipped. Returns the features, the labels and whether a header row was found."""
    if not path.exists():
        raise DataError(f"{path.parent} has train.csv but no {path.name}")
    try:
        with path.open(encoding="utf-8-sig") as f:
            first = f.readline().strip().split(",")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}")
    try:
        [float(v) for v in first]
        header = None
    except ValueError:
        header = [h.strip().strip('"') for h in first]
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1 if header else 0, ndmin=2,
                           dtype=np.float64, encoding="utf-8-sig")
    except ValueError as e:
        raise DataError(f"{path}: not a table of numbers ({e})")
    col = header.index("label") if header and "label" in header else table.shape[1] - 1
    if table.shape[1] < 2:
        raise DataError(f"{path}: needs feature columns and a label column, found "
                        f"{table.shape[1]} column")
    x, y = np.delete(table, col, axis=1), table[:, col]
    if np.all(x == np.round(x)) and x.max(initial=0) > 1:
        x = x.astype(np.int64)
    return x, y, header is not None


def checked_arrays(x_train, y_train, x_test, y_test, where=("train", "test"),
                   path=None) -> tuple[np.ndarray, ...]:
    """The four arrays checked (shapes, counts, integer labels, matching widths, pixel range) and
    scaled to float32 in [0, 1]; every source of data, files or arrays, passes through here."""
    # where: each split's name in messages, or (its images' name, its labels') for two files
    (wx, wy), (tx, ty) = (w if isinstance(w, tuple) else (w, w) for w in where)
    xtr, ytr = _check_pair(np.asarray(x_train), np.asarray(y_train), wx, wy)
    xte, yte = _check_pair(np.asarray(x_test), np.asarray(y_test), tx, ty)
    check_classes(ytr, wy)
    if yte.max() > ytr.max():
        raise DataError(f"{ty}: test labels include class {int(yte.max())}, but training "
                        f"labels only go up to {int(ytr.max())}")
    if xtr.shape[1] != xte.shape[1]:
        raise DataError(f"{path or tx}: train images have {xtr.shape[1]} features, test "
                        f"images {xte.shape[1]}; they must match")
    return _scale(xtr, wx), ytr, _scale(xte, tx), yte
