"""Stopping training cleanly on SIGINT (Ctrl-C) and SIGTERM (kill, schedulers)."""
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(Exception):
    """Training saved a checkpoint and stopped because of a signal; exit with 128 + signum."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequests:
    """While active, SIGINT and SIGTERM only record themselves in `signum`; the training
    loop checks it between steps, saves and stops. A second Ctrl-C raises
    KeyboardInterrupt at once (for when saving is not wanted). Outside the main thread,
    where Python cannot install handlers, it changes nothing."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def _record(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def name(self):
        """The name of the signal received (SIGINT, SIGTERM), or None."""
        return signal.Signals(self.signum).name if self.signum else None

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
