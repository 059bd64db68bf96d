"""The training progress bar under a cluster's global step, which other workers move."""
from utils.run.progress import TrainingProgress


def test_a_global_step_outside_the_bar_is_shown_at_its_edge():
    progress = TrainingProgress(42, 400, 16)
    metrics = {'total': 1.0, 'kl': 0.5}
    progress.update(41, metrics)  # a restarted chief restored an older checkpoint
    assert progress.bar.value == 42
    progress.update(405, metrics)  # another worker's steps carried it past the end
    assert progress.bar.value == 400
    progress.finish()
