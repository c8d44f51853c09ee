"""Seeding: one seed in the config, one named stream per use, so any run is reproducible from its
folder and arms of an ablation that share a seed share their split, labels and batch order."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

STREAMS = ("split", "labels", "init", "head", "batches", "noise", "chains")


def seed_for(seed: int, stream: str) -> int:
    """The 63-bit seed of a named random stream, derived from the config's seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stream}".encode()).digest()[:8], "big") >> 1


def generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed_for(seed, stream))


def seed_everything(seed: int) -> None:
    """Seed the global generators once at the top of a command (for anything not given a stream)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
