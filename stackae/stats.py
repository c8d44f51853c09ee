"""The statistics of a report: per-condition summaries and paired comparisons between arms.

Tests and intervals come from scipy (t intervals, paired t-test, Wilcoxon signed-rank); only the
Holm step-down correction, which scipy lacks, is written out here.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

ALPHA = 0.05


def _num(x) -> float | None:
    """A float for JSON, None for NaN/inf (undefined with too few seeds)."""
    x = float(x)
    return x if math.isfinite(x) else None


def summarize(errors) -> dict:
    """n, mean, sample std and the 95% t-interval of the mean of one condition's test errors."""
    x = np.asarray(errors, dtype=float)
    out = {"n": len(x), "mean": _num(x.mean()), "std": None, "ci_low": None, "ci_high": None}
    if len(x) >= 2:
        out["std"] = _num(x.std(ddof=1))
        with warnings.catch_warnings():  # identical values: a zero-width interval, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_1samp(x, 0.0).confidence_interval(1 - ALPHA)
        out["ci_low"], out["ci_high"] = _num(ci.low), _num(ci.high)
        if out["std"] == 0:
            out["ci_low"] = out["ci_high"] = out["mean"]
    return out


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with n pairs."""
    return min(1.0, 2.0 / 2 ** n)


def min_wilcoxon_seeds(family: int = 1) -> int:
    """The fewest pairs with which the exact Wilcoxon test can still reach p < ALPHA after Holm's
    correction over `family` tests (its smallest p is multiplied by the family size)."""
    n = 1
    while family * min_wilcoxon_p(n) >= ALPHA:
        n += 1
    return n


def paired(a, b) -> dict:
    """a - b over seeds present in both (a, b: equal-length arrays paired by seed): mean
    difference, its 95% t-interval, paired t-test and Wilcoxon signed-rank p-values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    out = {"n": len(d), "mean_diff": _num(d.mean()) if len(d) else None, "std_diff": None,
           "ci_low": None, "ci_high": None, "t": None, "p_t": None, "w": None, "p_wilcoxon": None}
    if len(d) >= 2:
        out["std_diff"] = _num(d.std(ddof=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t = stats.ttest_rel(a, b)
            ci = t.confidence_interval(1 - ALPHA)
            out.update(t=_num(t.statistic), p_t=_num(t.pvalue), ci_low=_num(ci.low),
                       ci_high=_num(ci.high))
            if np.any(d != 0):
                w = stats.wilcoxon(a, b)
                out.update(w=_num(w.statistic), p_wilcoxon=_num(w.pvalue))
            else:  # no difference at all: nothing to rank
                out.update(p_wilcoxon=1.0)
    return out


def holm(pvalues: list) -> list:
    """Holm's step-down adjusted p-values (None stays None and does not count as a test)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    adjusted = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def warnings_for(n: int, family: int = 1) -> list[str]:
    """What n paired seeds cannot show, in words (`family`: the tests Holm corrects together)."""
    out = []
    if n < 2:
        out.append(f"only {n} paired seed: no test or interval is possible")
    elif n < 3:
        out.append(f"only {n} paired seeds: the t-test has {n - 1} degree of freedom and its "
                   f"interval is very wide; use at least 3 seeds (better 6 or more)")
    need = min_wilcoxon_seeds(family)
    if 2 <= n < need:
        across = f" after Holm's correction across {family} label budgets" if family > 1 else ""
        out.append(f"with {n} paired seeds the Wilcoxon signed-rank test cannot reach p < "
                   f"{ALPHA}{across} (its smallest two-sided p is 2/2^{n} = "
                   f"{min_wilcoxon_p(n):.3g}" + (f", times {family}" if family > 1 else "") +
                   f"); use at least {need} seeds")
    return out


def verdict(arm: str, ref: str, cmp: dict, family: int = 1) -> str:
    """One plain sentence on a comparison, from the Holm-adjusted paired t-test."""
    if cmp["p_t_holm"] is None:
        return f"{arm} vs {ref}: no test possible with {cmp['n']} paired seed(s)"
    diff = 100 * cmp["mean_diff"]
    better = arm if diff < 0 else ref
    ci = f"95% CI {100 * cmp['ci_low']:+.2f} to {100 * cmp['ci_high']:+.2f} points"
    if cmp["p_t_holm"] < ALPHA:
        text = (f"{better} has the lower test error: {arm} - {ref} = {diff:+.2f} points ({ci}), "
                f"significant after Holm correction (paired t-test p = {cmp['p_t_holm']:.3g})")
        if cmp["n"] < min_wilcoxon_seeds(family):
            text += f"; the Wilcoxon test cannot confirm it with {cmp['n']} seeds"
        elif cmp["p_wilcoxon_holm"] is not None and cmp["p_wilcoxon_holm"] >= ALPHA:
            text += (f"; the Wilcoxon test does not confirm it (Holm p = "
                     f"{cmp['p_wilcoxon_holm']:.3g})")
        return text
    return (f"{arm} - {ref} = {diff:+.2f} points ({ci}): not significant (Holm-corrected paired "
            f"t-test p = {cmp['p_t_holm']:.3g}); these seeds cannot tell the two inits apart")
