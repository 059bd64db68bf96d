"""Parameter-server training on 127.0.0.1: 1 parameter server + 2 workers as separate
processes (ports picked free by the test, every process time-bounded), and the
cluster description from flags and TF_CONFIG."""
import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

import data_reader
import main
import runner
from conftest import ROOT, TINY
from utils.run import cluster
from utils.run.errors import UserError

# timing-sensitive (kill at random moments, local ports, deadlines): the suite runs
# these alone, after the parallel part (README "Two commands")
pytestmark = pytest.mark.serial

PROCESS_TIMEOUT_S = 600  # no process of a test may run longer (a generous cap: a loaded machine)
STEPS_LINE = re.compile(r'ran (\d+) training steps of its own; global step (\d+)')


def free_ports(count):
    """`count` distinct ports that nothing listens on now."""
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(('127.0.0.1', 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


class LocalCluster:
    """1 parameter server and `workers` workers of main.py, each with its own log."""

    def __init__(self, root, data_dir, workers=2, **flags):
        ps_port, *worker_ports = free_ports(1 + workers)
        values = dict(TINY, data_dir=data_dir, valid_data='', modeldir=root / 'model',
                      logdir=root / 'log', sampledir=root / 'samples', batch=16,
                      ps_hosts=f'127.0.0.1:{ps_port}',
                      worker_hosts=','.join(f'127.0.0.1:{port}' for port in worker_ports))
        values.update(flags)
        self.args = [f'--{name}={value}' for name, value in values.items()]
        self.root = root
        self.processes = {}

    def start(self, job, index, run=0):
        """Starts one process; its output goes to JOBINDEX-RUN.log."""
        log = open(self.root / f'{job}{index}-{run}.log', 'w')
        self.processes[(job, index, run)] = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'main.py'), *self.args, f'--job_name={job}',
             f'--task_index={index}'], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        return self.processes[(job, index, run)]

    def wait_all(self):
        """Waits for every process (each within PROCESS_TIMEOUT_S of now); returns
        {key: exit status}."""
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        return {key: process.wait(timeout=max(1, deadline - time.monotonic()))
                for key, process in self.processes.items()}

    def kill_all(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    def log(self, job, index, run=0):
        return (self.root / f'{job}{index}-{run}.log').read_text()

    def own_steps(self, index, run=0):
        """(training steps the worker ran itself, the global step it saw at the end)."""
        found = STEPS_LINE.search(self.log('worker', index, run))
        assert found, self.log('worker', index, run)[-3000:]
        return int(found.group(1)), int(found.group(2))


@pytest.fixture
def local_cluster(tmp_path, tiny_data):
    made = []

    def make(**flags):
        made.append(LocalCluster(tmp_path, str(tiny_data), **flags))
        return made[-1]
    yield make
    for each in made:
        each.kill_all()


def start_everyone(run):
    run.start('ps', 0)
    run.start('worker', 0)
    run.start('worker', 1)


def train_losses(logdir):
    """(step, train/total) of the chief's summaries, in step order."""
    values = []
    for path in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            values += [(event.step, value.simple_value) for value in event.summary.value
                       if value.tag == 'train/total']
    return sorted(values)


def saved_steps(run):
    """The steps of the checkpoints in the run's modeldir, ascending."""
    return sorted(int(path.rsplit('-', 1)[1].split('.')[0])
                  for path in glob.glob(str(run.root / 'model' / 'msvae-*.index')))


def assert_all_exited_cleanly(run):
    statuses = run.wait_all()
    for (job, index, attempt), status in statuses.items():
        assert status == 0, run.log(job, index, attempt)[-3000:]
    assert 'workers [0, 1] finished; exiting' in run.log('ps', 0)


def test_asynchronous_workers_train_together_and_everyone_exits(local_cluster, tiny_data):
    data_dir = str(tiny_data)
    run = local_cluster(max_step=30, save_step=10, summary_step=5)
    start_everyone(run)
    assert_all_exited_cleanly(run)
    (chief_steps, chief_end), (other_steps, other_end) = run.own_steps(0), run.own_steps(1)
    assert other_steps > 0 and chief_steps > 0  # both workers took part
    # asynchronous: every worker step is one update of the shared global step
    assert chief_steps + other_steps == max(chief_end, other_end) >= 30
    assert train_losses(run.root / 'log')  # the chief wrote summaries
    saved = saved_steps(run)
    assert saved and saved[-1] >= 30
    # the loss went down: the cluster's last checkpoint against fresh weights, one batch
    conf = main.default_config(**dict(TINY, data_dir=data_dir, modeldir=str(run.root / 'model')))
    with data_reader.BatchReader(os.path.join(data_dir, 'train.h5'), 16, 16, 1, 16, 5) as reader:
        batch = reader.next_batch()
    trained, fresh = runner.Runner(conf), runner.Runner(conf)
    # asynchronous: the other worker's update may land between the chief reading the step
    # for the checkpoint's name and writing it, so msvae-N may hold a global step above N
    assert saved[-1] <= trained.restore(0) <= saved[-1] + 2
    fresh.sess.run(fresh.init_op)
    assert trained.evaluate_metrics([batch])['total'] < \
        0.8 * fresh.evaluate_metrics([batch])['total']
    trained.close()
    fresh.close()


def test_synchronous_updates_average_one_gradient_per_worker(local_cluster):
    run = local_cluster(max_step=20, save_step=20, sync_replicas=True)
    start_everyone(run)
    assert_all_exited_cleanly(run)
    (chief_steps, chief_end), (other_steps, other_end) = run.own_steps(0), run.own_steps(1)
    assert chief_end == other_end == 20  # synchronous updates stop exactly at max_step
    # each update aggregates 2 gradients (one per worker's step); at most one step per
    # worker is left over, dropped as stale when a late worker first joins
    assert 2 * 20 <= chief_steps + other_steps <= 2 * 20 + 2
    assert os.path.exists(run.root / 'model' / 'msvae-20.index')


def wait_for_checkpoint_after(run, step, alive):
    """Waits until modeldir holds a checkpoint after `step` while process `alive` runs."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while not saved_steps(run) or saved_steps(run)[-1] <= step:
        assert time.monotonic() < deadline and run.processes[alive].poll() is None
        time.sleep(0.2)
    return saved_steps(run)[-1]


def kill(run, key):
    run.processes[key].kill()
    assert run.processes[key].wait(timeout=300) != 0


def test_killed_workers_restart_and_the_run_completes(local_cluster):
    run = local_cluster(max_step=400, save_step=20, summary_step=50)
    start_everyone(run)
    wait_for_checkpoint_after(run, 0, ('worker', 0, 0))  # training is under way
    kill(run, ('worker', 1, 0))
    run.start('worker', 1, run=1)
    # the chief, killed in turn, resumes from its last checkpoint
    last = wait_for_checkpoint_after(run, saved_steps(run)[-1], ('worker', 0, 0))
    kill(run, ('worker', 0, 0))
    run.start('worker', 0, run=1)
    statuses = run.wait_all()
    for key in (('ps', 0, 0), ('worker', 0, 1), ('worker', 1, 1)):
        assert statuses[key] == 0, run.log(*key)[-3000:]
    assert 'workers [0, 1] finished; exiting' in run.log('ps', 0)
    restored = re.search(r'restored checkpoint step (\d+)', run.log('worker', 0, run=1))
    assert restored and int(restored.group(1)) >= last
    rejoined_steps, end = run.own_steps(1, run=1)
    assert rejoined_steps > 0 and end >= 400
    assert run.own_steps(0, run=1)[1] >= 400


def plan_conf(**flags):
    return main.default_config(**flags)


def test_tf_config_describes_the_same_cluster_as_the_flags():
    text = json.dumps({'cluster': {'chief': ['a:1'], 'worker': ['b:1', 'c:1'], 'ps': ['p:1']},
                       'task': {'type': 'worker', 'index': 1}})
    plan = cluster.plan_from(plan_conf(), {'TF_CONFIG': text})
    assert plan == cluster.Plan(['p:1'], ['a:1', 'b:1', 'c:1'], 'worker', 2)
    chief = json.dumps({'cluster': {'chief': ['a:1'], 'ps': ['p:1']},
                        'task': {'type': 'chief', 'index': 0}})
    assert cluster.plan_from(plan_conf(), {'TF_CONFIG': chief}).is_chief
    flags = plan_conf(ps_hosts=['p:1'], worker_hosts=['a:1', 'b:1'], job_name='ps')
    assert cluster.plan_from(flags, {'TF_CONFIG': text}).job_name == 'ps'  # flags first
    assert cluster.plan_from(plan_conf(), {}) is None


def test_a_broken_tf_config_is_a_clear_error():
    with pytest.raises(UserError, match='TF_CONFIG is not a cluster description'):
        cluster.plan_from(plan_conf(), {'TF_CONFIG': '{"cluster": []}'})
    with pytest.raises(UserError, match='TF_CONFIG: a host:port appears twice'):
        cluster.plan_from(plan_conf(), {'TF_CONFIG': json.dumps(
            {'cluster': {'ps': ['a:1'], 'worker': ['a:1']}, 'task': {'type': 'ps',
                                                                     'index': 0}})})


def test_the_chief_reads_the_single_process_order_and_the_others_their_own():
    assert cluster.worker_seed(1234, 0) == 1234
    seeds = {cluster.worker_seed(1234, index) for index in range(8)}
    assert len(seeds) == 8
