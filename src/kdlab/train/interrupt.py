"""Pre-emption: SIGTERM (a scheduler's notice) and SIGINT (Ctrl-C) end a run at the next step boundary, resumably.

While :class:`StopSignals` is active, the first SIGTERM or SIGINT only sets :attr:`StopSignals.signal`; the training
loop checks it after every optimizer step, writes an atomic checkpoint of the exact point (mid-epoch included:
:class:`kdlab.train.step.EpochProgress`), marks the run ``interrupted`` and raises :class:`RunInterrupted`, which the
command turns into the exit status ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT), the shell's
convention. ``kdlab train --resume RUN_DIR`` then continues to the same final weights and metrics as an
uninterrupted run. A second signal acts at once, as it would without kdlab (SIGINT raises KeyboardInterrupt, SIGTERM
ends the process): every file of a run directory is written atomically, so the last checkpoint stays usable.

Handlers are installed only in the main thread (Python delivers signals there) and restored on exit.
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
        self.signal = signum
        print(f"kdlab: {signal.Signals(signum).name} received: finishing this step, then checkpointing (send it "
              f"again to stop at once)", file=sys.stderr, flush=True)
        for number in SIGNALS:  # the next one acts as if kdlab were not listening
            signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)

    def __enter__(self) -> "StopSignals":
        if self.enabled:
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
