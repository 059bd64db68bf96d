"""In-graph data parallelism: --num_gpus towers, one per device, each on a slice of
the batch, all reading one copy of the variables (kept on the CPU).

Batch norm is synchronised across the towers: in training mode every tower
normalises with the mean and variance of the whole batch, gathered from the
towers' partial sums layer by layer. N towers therefore compute what one device
computes with the whole batch (the same loss and the same gradients, up to
float rounding), and the batch-norm moving averages are the whole batch's.

A tower's batch-norm layer needs the same layer's partial sums from every
tower, so the towers' graphs are built layer by layer in lockstep: each tower
is built in its own Python thread and the threads take turns (only one builds
at any time), handing over at every exchange of partial sums (TowerSync).
"""
import threading

import tensorflow as tf

tf1 = tf.compat.v1

VARIABLE_OPS = ('Variable', 'VariableV2', 'VarHandleOp')
VARIABLE_DEVICE = '/cpu:0'  # one copy of the weights, read by every tower


def tower_devices(count, gpus):
    """The device of each of `count` towers: the first `count` GPUs when TensorFlow
    sees that many (`gpus`), else logical CPU devices (for trying towers on a CPU)."""
    kind = 'gpu' if gpus >= count else 'cpu'
    return [f'/{kind}:{index}' for index in range(count)]


def variables_apart(device):
    """A device function: variables on VARIABLE_DEVICE, every other op on `device`."""
    def place(op):
        return VARIABLE_DEVICE if op.type in VARIABLE_OPS else device
    return place


class _Abandoned(Exception):
    """Raised in a tower's thread when another tower failed to build."""


class TowerSync:
    """Builds every tower's graph in its own thread, one thread at a time, so that a
    tower can use tensors of the same layer of every other tower (all_sum)."""

    def __init__(self, count):
        self.count = count
        self._turn = 0
        self._round = []
        self._error = None
        self._condition = threading.Condition()
        self._local = threading.local()

    def all_sum(self, tensors):
        """The element-wise sums over all towers of `tensors` (a list with the same
        structure in every tower), computed on the calling tower's device."""
        parts = self._exchange(list(tensors))
        return [tf.add_n(list(group)) for group in zip(*parts)]

    def build(self, build_tower):
        """Calls build_tower(index) for every tower, each in its own thread; returns
        their results in tower order. Re-raises the first tower's error."""
        graph = tf1.get_default_graph()
        results = [None] * self.count
        threads = [threading.Thread(target=self._work, args=(graph, build_tower, index, results))
                   for index in range(self.count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._error is not None:
            raise self._error
        return results

    def _work(self, graph, build_tower, index, results):
        self._local.index = index
        try:
            with self._condition:
                self._wait_for_turn(index)
            with graph.as_default():
                results[index] = build_tower(index)
        except _Abandoned:
            return
        except BaseException as err:  # handed to build(), which re-raises it
            with self._condition:
                self._error = err
                self._condition.notify_all()
            return
        with self._condition:
            self._pass_turn(index)

    def _exchange(self, value):
        """Adds this tower's `value` to the current round and waits until every tower
        has added its own; returns the round's values in tower order."""
        index = self._local.index
        with self._condition:
            self._round.append(value)
            values = self._round
            if len(values) == self.count:
                self._round = []
            self._pass_turn(index)
            self._wait_for_turn(index)
        return values

    def _pass_turn(self, index):
        self._turn = (index + 1) % self.count
        self._condition.notify_all()

    def _wait_for_turn(self, index):
        self._condition.wait_for(lambda: self._turn == index or self._error is not None)
        if self._error is not None:
            raise _Abandoned()


def average(dicts):
    """The element-wise mean of a list of dicts of scalar tensors (same keys)."""
    return {name: tf.add_n([values[name] for values in dicts]) / len(dicts)
            for name in dicts[0]}
