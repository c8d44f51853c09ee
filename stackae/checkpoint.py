"""Self-describing checkpoints: plain dicts of tensors, numbers and strings, so every load can use
`torch.load(..., weights_only=True)` and a file carrying code is refused.

A stack checkpoint holds, per layer, the encoder weight and bias (what `finetune` needs), the
decoder, width, activation and objective, plus the config and metrics that produced it.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from .config import to_dict

STACK_FORMAT = "stackae-stack"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, unsafe or does not fit; the message names it."""


def read(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the stack.pt file inside it")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warning would break the one line
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise CheckpointError(f"checkpoint {path} holds Python objects beyond tensors and plain "
                                  "data; refused (loaded with weights_only=True)")
        raise CheckpointError(f"checkpoint {path} is corrupt ({first[:120]})")
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError):
        # torch's own text here (zip internals, a bare key) would not help the reader
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated, or not a PyTorch "
                              f"checkpoint at all (expected a .pt file written by stackae)")
    if not isinstance(obj, dict) or "format" not in obj:
        raise CheckpointError(f"{path} is not a stackae checkpoint (no 'format' entry)")
    return obj


def stack_checkpoint(cfg, data, layers, metrics, unrolled=None) -> dict:
    return {
        "format": STACK_FORMAT, "version": FORMAT_VERSION, "input_dim": data.input_dim,
        "n_classes": data.n_classes, "dataset": data.name,
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "layers": [{"width": layer.n_out, "activation": layer.activation,
                    "objective": cfg.per_layer("objective", k), **layer.export()}
                   for k, layer in enumerate(layers)],
        "config": to_dict(cfg), "metrics": metrics, "unrolled": unrolled,
    }


def load_stack(path: str | Path, input_dim: int | None = None) -> dict:
    """Read and check a stack checkpoint; `input_dim` is the data's width, which must match."""
    ck = read(path)
    if ck.get("format") != STACK_FORMAT:
        hint = " (a single layer; give stack.pt)" if ck.get("format") == "stackae-layer" else ""
        raise CheckpointError(f"{path} is a {ck.get('format')!r} checkpoint, expected a stack "
                              f"checkpoint{hint}")
    try:
        n_in = int(ck["input_dim"])
        for i, layer in enumerate(ck["layers"]):
            w, b = layer["weight"], layer["bias"]
            if w.shape != (layer["width"], n_in) or b.shape != (layer["width"],):
                raise CheckpointError(f"{path}: layer {i + 1} weight has shape {tuple(w.shape)}, "
                                      f"expected ({layer['width']}, {n_in})")
            n_in = layer["width"]
    except (KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} is missing or has malformed stack entries ({e})")
    if input_dim is not None and int(ck["input_dim"]) != input_dim:
        raise CheckpointError(f"{path} was pretrained on inputs of width {ck['input_dim']}, but the "
                              f"data have width {input_dim}")
    return ck


def load_layer(path: Path, k: int, n_in: int, width: int) -> dict:
    """The state dict of a finished layer checkpoint (for --resume), checked against the config."""
    ck = read(path)
    if ck.get("format") != "stackae-layer" or ck.get("index") != k + 1:
        raise CheckpointError(f"{path} is not the checkpoint of layer {k + 1}")
    w = ck["state"].get("encoder.weight")
    if w is None or tuple(w.shape) != (width, n_in):
        raise CheckpointError(f"{path} has layer shape {None if w is None else tuple(w.shape)}, but "
                              f"the config asks for ({width}, {n_in}); resume with the same config")
    return ck["state"]
