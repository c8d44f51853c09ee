"""The report's figures, drawn headless with matplotlib's object API (no pyplot, no display).

Each function takes plain numbers already read from the run folders and writes one PNG.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

DPI = 110


def _colors(inits) -> dict:
    return {init: f"C{i}" for i, init in enumerate(inits)}


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI)


def error_vs_budget(conditions: list[dict], inits, depths, budgets, x_of: dict, path: Path) -> None:
    """Mean test error against label budget (log x), 95% CI band, one line per init."""
    colors = _colors(inits)
    fig = Figure(figsize=(5.5 * len(depths), 4.2), layout="constrained")
    for ax, depth in zip(fig.subplots(1, len(depths), squeeze=False)[0], depths):
        for k, init in enumerate(inits):
            rows = [c for c in conditions if c["init"] == init and c["depth"] == depth]
            rows.sort(key=lambda c: x_of[c["budget"]])
            # one budget: spread the inits sideways so that their error bars do not overlap
            shift = 1.05 ** (k - (len(inits) - 1) / 2) if len(budgets) == 1 else 1.0
            x = [x_of[c["budget"]] * shift for c in rows]
            ax.plot(x, [100 * c["mean"] for c in rows], "o-", color=colors[init], label=init)
            band = [(xi, c) for xi, c in zip(x, rows) if c["ci_low"] is not None]
            if band and len(budgets) == 1:  # one budget: a band has no width, so error bars
                xi, c = band[0]
                err = [[100 * (c["mean"] - c["ci_low"])], [100 * (c["ci_high"] - c["mean"])]]
                ax.errorbar([xi], [100 * c["mean"]], yerr=err, color=colors[init], capsize=4)
            elif band:
                ax.fill_between([b[0] for b in band], [100 * b[1]["ci_low"] for b in band],
                                [100 * b[1]["ci_high"] for b in band], color=colors[init],
                                alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ticks = [x_of[b] for b in budgets]
        ax.set_xticks(ticks, [f"all\n({x_of[b]:,})" if b == "all" else f"{int(b):,}"
                              for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("labelled training images")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"depth {depth}: mean and 95% CI over seeds")
        ax.grid(True, alpha=0.3)
        ax.legend()
    _save(fig, path)


def learning_curves(curves: dict, inits, depths, budgets, path: Path) -> None:
    """Validation error per epoch, mean over seeds with a +-1 std band; one panel per budget.
    `curves[(depth, budget, init)]` is a list of per-seed lists (runs may stop early)."""
    colors = _colors(inits)
    fig = Figure(figsize=(4.2 * len(budgets), 3.6 * len(depths)), layout="constrained")
    axes = fig.subplots(len(depths), len(budgets), squeeze=False)
    for r, depth in enumerate(depths):
        for c, budget in enumerate(budgets):
            ax = axes[r][c]
            lows, highs = [], []
            for init in inits:
                runs = curves.get((depth, budget, init))
                if not runs:
                    continue
                width = max(len(v) for v in runs)
                m = np.full((len(runs), width), np.nan)
                for i, v in enumerate(runs):
                    m[i, :len(v)] = v
                epochs = np.arange(1, width + 1)
                mean = 100 * np.nanmean(m, 0)
                with warnings.catch_warnings():  # epochs only one seed reached: no spread
                    warnings.simplefilter("ignore", RuntimeWarning)
                    std = 100 * np.nan_to_num(np.nanstd(m, 0, ddof=1))
                ax.plot(epochs, mean, color=colors[init], label=f"{init} (n={len(runs)})")
                ax.fill_between(epochs, mean - std, mean + std, color=colors[init], alpha=0.2,
                                linewidth=0)
                lows.append(np.nanmin(mean))
                highs.append(np.nanmax(mean))
            if lows and min(lows) > 0 and max(highs) / min(lows) > 10:
                ax.set_yscale("log")  # a random init's first epochs would flatten the others
                ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{budget} labels" + (f", depth {depth}" if len(depths) > 1 else ""))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("fine-tuning epoch")
            ax.set_ylabel("validation error (%)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
    _save(fig, path)


def per_seed(records: list[dict], inits, depths, budgets, path: Path) -> None:
    """Every seed's test error per condition: a box per init, the seeds as points, and a grey line
    joining each seed's arms (the pairing)."""
    colors = _colors(inits)
    fig = Figure(figsize=(max(3.2, 1.1 * len(inits) + 1.2) * len(budgets), 3.8 * len(depths)),
                 layout="constrained")
    axes = fig.subplots(len(depths), len(budgets), squeeze=False)
    for r, depth in enumerate(depths):
        for c, budget in enumerate(budgets):
            ax = axes[r][c]
            cell = {(x["init"], x["seed"]): 100 * x["test_error"] for x in records
                    if x["depth"] == depth and x["budget"] == budget}
            seeds = sorted({s for _, s in cell})
            for s in seeds:
                pts = [(i, cell[(init, s)]) for i, init in enumerate(inits) if (init, s) in cell]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color="0.75", linewidth=0.8,
                        zorder=1)
            data = [[cell[(init, s)] for s in seeds if (init, s) in cell] for init in inits]
            keep = [i for i, d in enumerate(data) if d]
            ax.boxplot([data[i] for i in keep], positions=keep, widths=0.5, showfliers=False,
                       medianprops={"color": "black"})
            for i in keep:
                ax.scatter([i] * len(data[i]), data[i], color=colors[inits[i]], zorder=3, s=18)
            ax.set_xticks(range(len(inits)), inits)
            ax.set_xlim(-0.6, len(inits) - 0.4)
            ax.set_title(f"{budget} labels" + (f", depth {depth}" if len(depths) > 1 else ""))
            ax.set_ylabel("test error (%)")
            ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def tuning_history(trials: dict, inits, path: Path) -> None:
    """A tuning's trials in order: each trial's validation error (a cross where it diverged,
    scored 100%; hollow where a network was pruned, scored the best it reached) and each arm's
    best so far; one panel per label budget. `trials[budget]` is the trials.jsonl records."""
    colors = _colors(inits)
    budgets = list(trials)
    fig = Figure(figsize=(4.6 * len(budgets), 3.8), layout="constrained")
    for ax, budget in zip(fig.subplots(1, len(budgets), squeeze=False)[0], budgets):
        values = []
        for init in inits:
            recs = sorted((r for r in trials[budget] if r["arm"] == init),
                          key=lambda r: r["number"])
            if not recs:
                continue
            x = [r["number"] + 1 for r in recs]
            y = [100 * r["val_error"] for r in recs]
            values += y
            for marker, pick in (("o", lambda r: not (r["diverged"] or r.get("pruned"))),
                                 ("x", lambda r: r["diverged"])):
                pts = [(a, b) for a, b, r in zip(x, y, recs) if pick(r)]
                if pts:
                    ax.scatter(*zip(*pts), color=colors[init], marker=marker, s=22, zorder=3)
            pts = [(a, b) for a, b, r in zip(x, y, recs) if r.get("pruned")]
            if pts:
                ax.scatter(*zip(*pts), facecolors="none", edgecolors=colors[init], s=22,
                           zorder=3)
            ax.step(x, np.minimum.accumulate(y), where="post", color=colors[init],
                    label=f"{init} (best so far)")
        if values and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")  # trials at chance would flatten the good ones
            ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{budget} labels")
        ax.set_xlabel("trial")
        ax.set_ylabel("validation error (%), tuning seeds' mean")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _save(fig, path)


def _mosaic(weights: np.ndarray, shape, cols: int = 10) -> np.ndarray:
    """First-layer weight rows as a grid of images, each scaled to its own [min, max]."""
    h, w = shape
    n = len(weights)
    rows = -(-n // cols)
    out = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1))
    for k, v in enumerate(weights):
        v = (v - v.min()) / (v.max() - v.min() + 1e-8)
        r, c = divmod(k, cols)
        out[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = \
            v.reshape(h, w)
    return out


def filters(panels: list[tuple[str, np.ndarray]], shape, path: Path) -> None:
    """First-layer filters side by side: (title, weight matrix rows) per panel."""
    mosaics = [_mosaic(w, shape, cols=min(10, len(w))) for _, w in panels]
    h, w = mosaics[0].shape
    fig = Figure(figsize=(4.2 * len(panels), max(1.8, 4.2 * h / w + 0.5)), layout="constrained")
    for ax, (title, _), m in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, mosaics):
        ax.imshow(m, cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize="medium")
        ax.set_axis_off()
    _save(fig, path)
