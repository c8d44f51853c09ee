"""Progress on stderr: one live bar (done/total and time left, drawn by tqdm) when stderr is a
terminal, the same messages as plain lines when it is not (a log file, a pipe, a SLURM job), and
nothing under --quiet.

    with Progress(total=30, unit="epoch", quiet=quiet):
        run_finetune(...)             # its per-epoch lines reach the bar through `say`

A run's lines reach the open Progress through `say` (RunLog.progress calls it), so the training
loops need not know whether a bar is drawn. A line that reports an epoch ("epoch 3/30") moves the
bar one step, and "resuming after epoch 12 of 30" sets it there; `update(done)` sets it directly
(an ablation counts its finished cells).
"""
from __future__ import annotations

import re
import sys

EPOCH_LINE = re.compile(r"\bepoch \d+/\d+")
RESUMED_LINE = re.compile(r"\bresuming after epoch (\d+) of \d+")
_open: list["Progress"] = []


class Progress:
    """A bar over `total` steps on a terminal, plain lines elsewhere, nothing when quiet."""

    def __init__(self, total: int, unit: str, quiet: bool = False, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet, self.bar = quiet, None
        if not quiet and total > 0 and _isatty(self.stream):
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit=unit, file=self.stream, dynamic_ncols=True,
                            smoothing=0.1)

    def line(self, text: str) -> None:
        """A message: above the bar on a terminal, a plain line otherwise."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
            if EPOCH_LINE.search(text):
                self.bar.update(1)
            elif m := RESUMED_LINE.search(text):  # a resumed run starts where it stood
                self.update(int(m.group(1)))
        else:
            print(text, file=self.stream, flush=True)

    def update(self, done: int) -> None:
        """Set the bar to `done` steps."""
        if self.bar is not None and done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        _open.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _open.remove(self)
        self.close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def say(line: str) -> None:
    """A progress line of a run: to the open Progress, else plainly to stderr."""
    if _open:
        _open[-1].line(line)
    else:
        print(line, file=sys.stderr, flush=True)
