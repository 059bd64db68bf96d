"""TensorFlow's set-up for this project, made by one explicit call: a static graph run
by a Session (TensorFlow 1.x style) and no INFO line per checkpoint restore."""
import tensorflow as tf


def setup():
    """Disables eager execution and quiets TensorFlow's Python logger; call it once,
    before any graph is built (main.py, the tests and the benchmarks do)."""
    tf.compat.v1.disable_eager_execution()
    tf.get_logger().setLevel('WARNING')
