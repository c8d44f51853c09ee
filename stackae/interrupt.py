"""ctrl-c between batches: a first SIGINT during a training command is deferred to the next
point where a training loop may stop (stop_point, after every batch), so KeyboardInterrupt never
lands inside an optimizer step, a file write or an object's finalizer (where Python prints and
swallows it, and the run would go on). The command line turns it into one line saying how to
resume. Free of torch, so the command line imports it at once."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_interrupted = False  # set by deferred_interrupts' handler, read by stop_point


@contextmanager
def deferred_interrupts():
    """In the block a first ctrl-c only sets the flag stop_point reads; a second interrupts at
    once. Off the main thread (where no handler can be set) interrupts are unchanged; work that
    ends before the next stop point ends normally."""
    global _interrupted
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        global _interrupted
        if _interrupted:
            signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt here and now
        _interrupted = True

    old, _interrupted = signal.signal(signal.SIGINT, handler), False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        _interrupted = False


def stop_point() -> None:
    """Where a training loop may stop on ctrl-c: between batches (see deferred_interrupts)."""
    if _interrupted:
        raise KeyboardInterrupt
