"""Test data helpers."""
import numpy as np


def blob_images(count, height=16, width=16, channel=1, seed=0):
    """uint8 images, each one bright Gaussian blob at a random place on black:
    simple enough for a tiny VAE to learn in tens of steps."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    images = np.empty((count, height, width, channel), np.uint8)
    for index in range(count):
        cy, cx = rng.uniform(0.25, 0.75, 2) * (height, width)
        radius = rng.uniform(0.1, 0.25) * min(height, width)
        blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius ** 2))
        images[index] = np.rint(255 * blob)[..., None]
    return images


def ctrl_c_as_at_a_terminal():
    """preexec_fn of a child that a test interrupts with SIGINT: the default action again,
    so Python raises KeyboardInterrupt there even when the suite was started in the
    background (where SIGINT is ignored and children inherit that)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
