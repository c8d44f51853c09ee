"""Every checkpoint format stackae writes and reads: a finished layer (layerK.pt), a stack
(stack.pt), a fine-tuned classifier (model.pt) and an unfinished fine-tuning's resume point
(resume.pt).

Checkpoints are plain dicts of tensors, numbers and strings, written atomically, so every load can
use `torch.load(..., weights_only=True)` and a file carrying code is refused. A stack holds, per
layer, the encoder weight and bias (what `finetune` needs), the decoder, width, activation and
objective, plus the config and metrics that produced it.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from .config import to_dict
from .runlog import RESUME_NAME, atomic_write

LAYER_FORMAT = "stackae-layer"
STACK_FORMAT = "stackae-stack"
CLASSIFIER_FORMAT = "stackae-classifier"
RESUME_FORMAT = "stackae-finetune-resume"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, unsafe or does not fit; the message names it."""


def save(path: str | Path, obj: dict) -> None:
    """Write a checkpoint aside and rename it into place: a killed run never leaves half a file."""
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def read(path: str | Path, mmap: bool = False) -> dict:
    """Any stackae checkpoint, loaded with weights_only=True (with `mmap`, its tensors mapped from
    the file rather than read); every failure is one CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the stack.pt file inside it")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warning would break the one line
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
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


# ---- layerK.pt: one finished layer of a pretraining run (for --resume) --------------------------

def layer_checkpoint(cfg, k: int, input_dim: int, state: dict, metrics: dict) -> dict:
    return {"format": LAYER_FORMAT, "index": k + 1, "input_dim": input_dim, "state": state,
            "metrics": metrics, "config": to_dict(cfg)}


def load_layer(path: Path, k: int, n_in: int, width: int) -> dict:
    """A finished layer checkpoint (state and metrics), checked against the config."""
    ck = read(path)
    if ck.get("format") != LAYER_FORMAT or ck.get("index") != k + 1:
        raise CheckpointError(f"{path} is not the checkpoint of layer {k + 1}")
    w = ck["state"].get("encoder.weight")
    if w is None or tuple(w.shape) != (width, n_in):
        raise CheckpointError(f"{path} has layer shape {None if w is None else tuple(w.shape)}, but "
                              f"the config asks for ({width}, {n_in}); resume with the same config")
    return ck


# ---- stack.pt: the pretrained stack that fine-tuning starts from --------------------------------

def stack_checkpoint(cfg, data, layers: list[dict], metrics, unrolled=None) -> dict:
    """`layers`: per layer, its width, activation and objective plus the exported weights."""
    return {
        "format": STACK_FORMAT, "version": FORMAT_VERSION, "input_dim": data.input_dim,
        "n_classes": data.n_classes, "dataset": data.name,
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "layers": layers, "config": to_dict(cfg), "metrics": metrics, "unrolled": unrolled,
    }


def load_stack(path: str | Path, input_dim: int | None = None) -> dict:
    """Read and check a stack checkpoint; `input_dim` is the data's width, which must match."""
    ck = read(path)
    if ck.get("format") != STACK_FORMAT:
        hint = " (a single layer; give stack.pt)" if ck.get("format") == LAYER_FORMAT else ""
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


# ---- model.pt: a fine-tuned classifier --------------------------------------------------------

def classifier_checkpoint(cfg, data, model: torch.nn.Sequential, activation, init: str) -> dict:
    widths = [m.out_features for m in model if isinstance(m, torch.nn.Linear)][:-1]
    return {"format": CLASSIFIER_FORMAT, "input_dim": data.input_dim, "n_classes": data.n_classes,
            "widths": widths,
            "activation": activation if isinstance(activation, str) else list(activation),
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": to_dict(cfg), "init": init}


def load_classifier(path: str | Path) -> dict:
    """Read and check a classifier checkpoint."""
    ck = read(path)
    if ck.get("format") != CLASSIFIER_FORMAT:
        raise CheckpointError(f"{path} is a {ck.get('format')!r} checkpoint, expected a fine-tuned "
                              f"classifier (model.pt)")
    missing = [k for k in ("input_dim", "n_classes", "widths", "activation", "state") if k not in ck]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return ck


# ---- resume.pt: where an unfinished fine-tuning stands, for --resume -----------------------------

# settings that may change between a run and its resume without changing what it computes
RESUME_MAY_DIFFER = ("device", "compile", "read_test")


def resume_checkpoint(cfg, device: torch.device, epoch: int, state: dict) -> dict:
    """One network's resume point after `epoch` (finetune.py fills `state`: weights, best
    weights, optimizer buffers, random streams, curves and model selection)."""
    return {"format": RESUME_FORMAT, "version": FORMAT_VERSION, "epoch": epoch,
            "device_type": device.type, "config": to_dict(cfg), **state}


def load_resume(folder: str | Path, cfg, device: torch.device) -> dict | None:
    """The resume point in a fine-tuning folder, when there is one that continues a run of `cfg`
    on this kind of device (random streams do not carry from one kind to another); else None,
    and the run starts again. Its tensors are mapped from the file, read as they are used."""
    path = Path(folder) / RESUME_NAME
    if not path.exists():
        return None
    try:
        ck = read(path, mmap=True)
    except CheckpointError:
        return None
    saved, now = ck.get("config", {}), to_dict(cfg)
    if (ck.get("format") != RESUME_FORMAT or ck.get("device_type") != device.type
            or any(not same_setting(k, saved.get(k), v) for k, v in now.items()
                   if k not in RESUME_MAY_DIFFER)):
        return None
    return ck


def same_setting(name: str, saved, now) -> bool:
    """Whether a resume point's setting is the run's. A stack (init, like) is named by its path
    as given, which a resume may spell otherwise (--out relative or absolute, the folder moved):
    the same file, or the same last four parts (<grid>/runs/pretrain/<key>/stack.pt), is the same
    stack."""
    if saved == now or name not in ("init", "like") or not (saved and now):
        return saved == now
    a, b = Path(str(saved)), Path(str(now))
    return a.parts[-4:] == b.parts[-4:] or (a.exists() and b.exists() and a.samefile(b))


def resume_epoch(folder: str | Path) -> int:
    """The epoch a fine-tuning folder's resume point stands at (0 without one): what of its logs a
    resumed run keeps. Read memory-mapped, so the weights are not loaded."""
    path = Path(folder) / RESUME_NAME
    if not path.exists():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile,
            pickle.UnpicklingError):  # unreadable: load_resume refuses it too; the run starts again
        return 0
