"""How long a run trained to reach each step, read from its TensorBoard events (the wall
time of every train/ summary), so that a model's checkpoints can be placed on a time
axis: FID after 10, 30, 60 and 90 minutes of training.

A run trained in parts (stopped and resumed) has pauses between its parts; a gap
between two summaries longer than PAUSE_SECONDS counts as a pause, not as training.
"""
import bisect

import numpy as np

PAUSE_SECONDS = 300.0  # a gap between two train/ summaries longer than this is a pause
TAG = 'train/total'  # written every --summary_step steps by the chief


def summary_times(logdir):
    """[(step, wall time in s)] of the train/total summaries in logdir, by step (a step
    written twice, by a run and its resumption, keeps the later time)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logdir, size_guidance={'scalars': 0, 'images': 1,
                                                     'histograms': 1, 'tensors': 1})
    events.Reload()
    if TAG not in events.Tags()['scalars']:
        return []
    by_step = {}
    for event in events.Scalars(TAG):
        by_step[event.step] = event.wall_time
    return sorted(by_step.items())


def training_seconds(times, pause=PAUSE_SECONDS):
    """{step: seconds of training to reach it} from summary_times(): the gaps between
    consecutive summaries, summed, without pauses. The first summary's own steps are
    counted at the median pace of the others."""
    if not times:
        return {}
    steps = np.array([step for step, _ in times], np.float64)
    walls = np.array([wall for _, wall in times], np.float64)
    gaps = np.diff(walls)
    training = gaps <= pause
    pace = (float(np.median(gaps[training] / np.diff(steps)[training]))
            if training.any() else 0.0)  # seconds per step
    elapsed = np.concatenate([[steps[0] * pace], np.where(training, gaps, 0.0)])
    return dict(zip((int(step) for step in steps), np.cumsum(elapsed).tolist()))


def seconds_at(seconds, step):
    """Training seconds at `step`, interpolated between the summarised steps around it."""
    steps = sorted(seconds)
    index = bisect.bisect_left(steps, step)
    if index < len(steps) and steps[index] == step:
        return seconds[step]
    if index == 0 or index == len(steps):
        raise ValueError(f'step {step} is outside the summarised steps '
                         f'{steps[0]}..{steps[-1]}')
    before, after = steps[index - 1], steps[index]
    share = (step - before) / (after - before)
    return seconds[before] + share * (seconds[after] - seconds[before])


def steps_at_minutes(seconds, saved_steps, minutes):
    """For each budget in `minutes`, the newest saved step reached within it (None when
    no saved step was)."""
    chosen = []
    for budget in minutes:
        within = [step for step in saved_steps if seconds_at(seconds, step) <= budget * 60]
        chosen.append(within[-1] if within else None)
    return chosen
