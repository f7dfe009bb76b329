"""What SIGINT and SIGTERM do to a run: stop after the round in progress, or abort at start-up.

Job schedulers send SIGTERM, a user Ctrl-C (SIGINT); both are handled alike.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator, Optional

logger = logging.getLogger("fedsim.experiment.run")


class RunInterrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after a finished round, its checkpoint and metrics written.

    ``exit_code`` is the shell's code for a command ended by that signal (130, 143);
    ``signal_name`` and ``round_num`` say which signal and after which round.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT, round_num: Optional[int] = None):
        super().__init__(message)
        self.exit_code = 128 + int(signum)
        self.signal_name = signal.Signals(signum).name
        self.round_num = round_num


class RunAborted(KeyboardInterrupt):
    """A signal during start-up, or a second one during a round: the run ends at once.

    A KeyboardInterrupt, so code that cleans up after Ctrl-C cleans up after
    it too; the message says what was kept.
    """


def interrupt_behind(error: BaseException) -> Optional[KeyboardInterrupt]:
    """The Ctrl-C or :class:`RunAborted` that caused ``error``, if one did (else None).

    A signal handler raises wherever Python happens to be; inside a C
    extension's call (TensorFlow's ``nest``, say) the extension then fails
    with a ``SystemError`` whose cause is the interrupt. Such an error is the
    interrupt, not a failure of the run.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """What SIGINT and SIGTERM (what job schedulers send) do at each stage of a run.

    During start-up (building data and model) a signal aborts at once with
    :class:`RunAborted`: there is nothing to save. Once rounds run
    (:meth:`running`), the first asks the run to stop after the round in
    progress, which then writes its checkpoint and metrics; a second aborts.
    Either way the CLI prints one line, never a traceback.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.received: Optional[int] = None
        self._rounds_started = False

    @property
    def received_name(self) -> str:
        return signal.Signals(self.received or signal.SIGINT).name

    @contextlib.contextmanager
    def running(self) -> Iterator[threading.Event]:
        # Never reset: after the last round, a signal must not abort the final checkpoint and summary.
        self._rounds_started = True
        yield self.stop

    def handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if not self._rounds_started:
            raise RunAborted(f"{name} during start-up: no round ran in this process")
        if self.stop.is_set():
            raise RunAborted(f"aborted by a second {name} during a round; the run directory keeps every "
                             "round up to its newest checkpoint. Continue with 'fedsim resume'")
        self.received = signum
        self.stop.set()
        logger.warning("%s: stopping after this round (send it again to abort now)", name)


@contextlib.contextmanager
def handling_signals() -> Iterator[StopSignals]:
    """Installs :class:`StopSignals`' handler for SIGINT and SIGTERM, restoring the previous ones after."""
    handler = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield handler  # signal handlers can only be set from the main thread
        return
    previous = {signum: signal.signal(signum, handler.handle) for signum in _STOP_SIGNALS}
    try:
        yield handler
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
