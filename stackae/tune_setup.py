"""tune.json: a tuning's settings (search space, trials per arm, tuning seeds, trials at once,
pruning), checked against those of a tuning being resumed before any folder is made, and the
`stackae tune` command line that reruns it.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from .claims import ClaimError
from .config import ConfigError
from .config_grid import AblateConfig
from .runlog import RunError
from .space import PRETRAINING, default_space, pretrain_budget, read_tuning
from .space_read import distributions, read_space
from .tune import trial_config


def setup(cfg: AblateConfig, out: Path, resuming: bool, space, trials, seeds,
          at_once: int | None = None, device=None, prune_after: int | None = None) -> dict:
    """tune.json's space, trials, tuning seeds, trials at once and the epoch pruning starts from
    (0: none): those given (None = not given)
    agree with a resumed tuning's, the rest come from it or the defaults (trials at once: 1 on a
    CPU, whose loop holds few networks, 5 on a GPU); all checked before any folder. Also its
    pretraining budget (where the space tunes pretraining) and how the first trials are drawn."""
    path = out / "tune.json"
    saved = read_tuning(out) if resuming and path.exists() else {}
    if saved:
        saved.setdefault("trials_at_once", 1)  # tunings from before rounds ran one at a time
        saved.setdefault("prune_after", 0)  # and from before trials were pruned
    if resuming and not saved and (out / "results.jsonl").exists():
        raise ClaimError(f"{out} holds a `stackae ablate` run (its cells ran untuned); resume it "
                         f"with stackae ablate --out {out} --resume")
    if isinstance(space, (str, Path)):
        space = read_space(space)
    asked = {"space": space, "trials": trials,
             "tune_seeds": None if seeds is None else [int(s) for s in seeds],
             "trials_at_once": at_once, "prune_after": prune_after}
    for name, value in asked.items():
        if saved and value is not None and value != saved[name]:
            raise ConfigError(name, f"{json.dumps(value)} differs from the tuning being resumed "
                                    f"({json.dumps(saved[name])} in {path})")
    chosen = {name: next(v for v in (saved.get(name), asked[name], default) if v is not None)
              for name, default in (("space", default_space(cfg)), ("trials", 20),
                                    ("tune_seeds", list(cfg.seeds[:2])),
                                    ("trials_at_once",
                                     5 if getattr(device, "type", device) == "cuda" else 1),
                                    ("prune_after", 0))}
    for name in ("trials", "trials_at_once"):
        if chosen[name] < 1:
            raise ConfigError(name, f"must be at least 1, got {chosen[name]}")
    if chosen["prune_after"] < 0:
        raise ConfigError("prune_after", f"must be 0 (no pruning) or an epoch, got "
                                         f"{chosen['prune_after']}")
    if not chosen["tune_seeds"]:
        raise ConfigError("tune_seeds", "needs at least one seed")
    try:  # the tuning seeds must make a valid grid of their own
        trial_config(cfg, list(cfg.inits), cfg.labels[0], chosen["tune_seeds"], {})
    except ConfigError as e:
        raise ConfigError("tune_seeds", e.message)
    try:
        dists = distributions(chosen["space"], cfg)
    except ConfigError as e:
        if space is None and saved:  # the space came from the folder, not from --space
            raise RunError(f"{path}: its space is not valid for this grid ({e.message})")
        raise
    if PRETRAINING & set(dists):
        chosen["pretrain_budget"] = pretrain_budget(cfg)
    # how the first trials are drawn (proposals.propose): tunings from before the Sobol start go on
    # with random ones, so a resumed tuning proposes what it would have
    chosen["startup"] = saved.get("startup", "random") if saved else "sobol"
    return chosen


def command(cfg: AblateConfig, out: Path, chosen: dict) -> str:
    """The `stackae tune` command line that reruns this tuning into `out`."""
    from .grid import command as grid_command
    return ("stackae tune " + grid_command(cfg, out).split(" ", 2)[2]
            + f" --trials {chosen['trials']} --space {shlex.quote(json.dumps(chosen['space']))}"
            + f" --tune-seeds {','.join(map(str, chosen['tune_seeds']))}"
            + f" --trials-at-once {chosen['trials_at_once']}"
            + (f" --prune-after {chosen['prune_after']}" if chosen.get("prune_after") else ""))
