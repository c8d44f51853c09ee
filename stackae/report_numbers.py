"""How the reports write numbers: errors as percentages, p-values and counts of things."""


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def pval(p) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p < 0.01 else f"{p:.3f}")


def counted(n: int, noun: str) -> str:
    """'1 seed', '2 seeds'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
