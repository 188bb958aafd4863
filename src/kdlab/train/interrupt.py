"""Pre-emption: SIGTERM (a scheduler's notice) and SIGINT (Ctrl-C) end a run at the next step boundary, resumably.

While :class:`StopSignals` is active, the first SIGTERM or SIGINT only sets :attr:`StopSignals.signal`; the training
loop checks it after every optimizer step, writes an atomic checkpoint of the exact point (mid-epoch included:
:class:`kdlab.train.step.EpochProgress`), marks the run ``interrupted`` and raises :class:`RunInterrupted`, which the
command turns into the exit status ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT), the shell's
convention. ``kdlab train --resume RUN_DIR`` then continues to the same final weights and metrics as an
uninterrupted run. A second SIGINT acts at once (KeyboardInterrupt: a user pressing Ctrl-C twice means it; every file
of a run directory is written atomically, so the last checkpoint stays usable); further SIGTERMs are ignored, since a
scheduler may signal every process of a job and a study's parent forwards its own signal to its workers too.

Handlers are installed only in the main thread (Python delivers signals there) and restored on exit; a signal this
process ignores (``SIG_IGN``: a study's worker ignores SIGINT, which its parent forwards as SIGTERM) stays ignored.
"""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(Exception):
    """The run stopped on a signal after checkpointing; ``exit_status`` is 128 + the signal's number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    def __reduce__(self):  # crosses from a study's worker process to its parent
        return type(self), (self.signum, str(self))

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopSignals:
    """A context in which SIGTERM and SIGINT request a stop instead of ending the process."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a repeated SIGTERM: already stopping
            return
        self.signal = signum
        print(f"kdlab: {signal.Signals(signum).name} received: finishing this step, then checkpointing (Ctrl-C "
              f"again stops at once)", file=sys.stderr, flush=True)
        if signal.SIGINT in self._previous:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> "StopSignals":
        if self.enabled:
            for number in SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
