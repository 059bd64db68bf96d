"""The training progress line: step, losses, images/s and time left (progressbar2)."""
import collections
import sys
import time

import progressbar

RATE_WINDOW = 50  # steps over which images/s is measured
QUIET_INTERVAL_S = 30  # seconds between lines when stderr is not a terminal (logs, CI)


class TrainingProgress:
    """A progress bar over global steps [start, end] that also shows losses and images/s.

    On a terminal it redraws in place; in a log file it writes one line every
    QUIET_INTERVAL_S seconds (and the last step), so week-long runs keep small logs.
    """

    def __init__(self, start, end, batch, metric_names=('total', 'kl')):
        self.batch = batch
        self.start = start
        self.end = end
        self.metric_names = metric_names
        self._recent = collections.deque(maxlen=RATE_WINDOW)
        self._interactive = sys.stderr.isatty()
        self._last_draw = -float('inf')
        self._finished = False
        widgets = ['step ', progressbar.SimpleProgress(), ' ', progressbar.Bar(), ' ']
        for name in metric_names:
            widgets += [progressbar.Variable(name, precision=4, width=8), ' ']
        widgets += [progressbar.Variable('speed', format='{value}', width=12), ' ',
                    progressbar.AdaptiveETA()]
        self.bar = progressbar.ProgressBar(
            min_value=start, max_value=end, initial_value=start, widgets=widgets,
            variables={'speed': '- img/s'})
        self.bar.start()

    def images_per_second(self):
        """Training images/s over the last RATE_WINDOW steps (None before two steps)."""
        if len(self._recent) < 2:
            return None
        (first_time, first_step), (last_time, last_step) = self._recent[0], self._recent[-1]
        return (last_step - first_step) * self.batch / max(last_time - first_time, 1e-9)

    def update(self, step, metrics):
        """Shows `step` done with the metrics (a dict holding metric_names)."""
        now = time.perf_counter()
        self._recent.append((now, step))
        if not self._interactive and now - self._last_draw < QUIET_INTERVAL_S \
                and step < self.end:
            return
        self._last_draw = now
        rate = self.images_per_second()
        values = {name: float(metrics[name]) for name in self.metric_names}
        speed = '- img/s' if rate is None else f'{rate:.0f} img/s'
        # asynchronous workers of a cluster may carry the global step past the end, and a
        # restarted chief that restores its last checkpoint sets it back below the start
        self.bar.update(min(max(step, self.start), self.end), speed=speed, **values)

    def pause(self):
        """Forgets the step times so far: work that is not training (validation,
        saving) does not count against images/s."""
        self._recent.clear()

    def finish(self):
        """Draws the final state and ends the line (once; later calls do nothing)."""
        if not self._finished:
            self._finished = True
            self.bar.finish(dirty=True)


class CountProgress:
    """A progress bar over a count of images (evaluation, feature extraction) or of other
    `unit`s, with their rate and the time left; in a log file one line every QUIET_INTERVAL_S seconds."""

    def __init__(self, total, label, unit='img'):
        self.total = total
        self.done = 0
        self._interactive = sys.stderr.isatty()
        self._last_draw = -float('inf')
        widgets = [f'{label} ', progressbar.SimpleProgress(), ' ', progressbar.Bar(), ' ',
                   progressbar.FileTransferSpeed(unit=unit), ' ', progressbar.AdaptiveETA()]
        self.bar = progressbar.ProgressBar(max_value=total, widgets=widgets)
        self.bar.start()

    def add(self, count):
        """Counts `count` more images done."""
        self.done = min(self.done + count, self.total)
        now = time.perf_counter()
        if self._interactive or now - self._last_draw >= QUIET_INTERVAL_S \
                or self.done == self.total:
            self._last_draw = now
            self.bar.update(self.done)

    def finish(self):
        """Ends the line."""
        self.bar.finish(dirty=True)
