"""Parameter-server training on TensorFlow's distributed runtime (between-graph
replication): every process runs main.py with the same --ps_hosts and
--worker_hosts and its own --job_name and --task_index.

- A parameter server holds the variables (replica_device_setter spreads them
  over the servers) and serves until every worker has reported that it reached
  max_step; then it exits by itself.
- Each worker builds the whole graph and runs training steps in a
  MonitoredTrainingSession on its own seeded order of the training file:
  asynchronously (each worker's gradient updates the variables on its own), or
  with --sync_replicas through SyncReplicasOptimizer (one update from the mean
  of one gradient per worker, so the global step counts updates, not batches).
- Worker 0, the chief, initialises the variables (or restores the latest
  checkpoint) and writes checkpoints, summaries, validation and samples. The
  others wait for it, and a worker that is restarted joins the running job
  where it stands.

This module only sets up the cluster: the graph is runner.Runner's, and every
worker runs runner.train_loop, the loop of a single process, in its monitored
session.
"""
import threading
import time

import tensorflow as tf

import runner as run
from utils.run.errors import UserError
from utils.run.signals import StopRequests, TrainingStopped

tf1 = tf.compat.v1

WAIT_FOR_CHIEF_S = 600  # a worker gives up when the chief has not initialised by then
POLL_S = 1  # how often a waiting worker asks whether the chief has initialised
STOP_GRACE_S = 10  # seconds the session's threads get to stop at the end


def server_for(plan):
    """This process's in-process TensorFlow server, listening at its host:port."""
    return tf1.train.Server(tf1.train.ClusterSpec(plan.as_dict()), job_name=plan.job_name,
                            task_index=plan.task_index)


def device_filters(plan, base=None):
    """A session config that only reaches the parameter servers and this task, so that a
    worker never waits for another worker (one that is down, or not started)."""
    config = tf1.ConfigProto() if base is None else base
    config.device_filters[:] = ['/job:ps', f'/job:{plan.job_name}/task:{plan.task_index}']
    return config


def _finished_queue(ps_index, num_workers):
    """The queue, on parameter server `ps_index`, where each worker reports that it is
    done (the same queue in every process: one shared name, one device)."""
    with tf1.device(f'/job:ps/task:{ps_index}'):
        return tf1.FIFOQueue(num_workers, [tf.int32], shapes=[[]],
                             shared_name=f'finished_workers_{ps_index}',
                             name=f'finished_workers_{ps_index}')


def serve(plan):
    """Runs a parameter server until every worker has reported that it finished."""
    server = server_for(plan)
    host = plan.ps_hosts[plan.task_index]
    print(f'parameter server {plan.task_index} at {host}: serving until all '
          f'{plan.num_workers} workers have finished', flush=True)
    graph = tf.Graph()
    with graph.as_default():
        everyone = _finished_queue(plan.task_index, plan.num_workers).dequeue_many(
            plan.num_workers)
    with tf1.Session(server.target, graph=graph, config=device_filters(plan)) as sess:
        finished = sess.run(everyone)
    print(f'parameter server {plan.task_index}: workers {sorted(finished.tolist())} finished; '
          f'exiting', flush=True)


def _report_finished(server, plan):
    """Tells every parameter server that this worker is done."""
    graph = tf.Graph()
    with graph.as_default():
        reports = [_finished_queue(index, plan.num_workers).enqueue(plan.task_index)
                   for index in range(len(plan.ps_hosts))]
    with tf1.Session(server.target, graph=graph, config=device_filters(plan)) as sess:
        sess.run(reports)


class _QuietCancelledQueueRunners:
    """While active, a queue-runner thread cancelled by the closing session (the sync
    chief's update thread, waiting for gradients that no longer come) ends without
    printing a traceback; other thread errors print as usual."""

    def __enter__(self):
        self._previous = threading.excepthook
        threading.excepthook = self._hook
        return self

    def _hook(self, args):
        if not (issubclass(args.exc_type, tf.errors.CancelledError)
                and args.thread.name.startswith('QueueRunnerThread')):
            self._previous(args)

    def __exit__(self, *exc):
        threading.excepthook = self._previous


class _SessionCapture(tf1.train.SessionRunHook):
    """Hands the monitored session's raw session to the runner, for the chief's saving,
    validation and sampling runs (which must not trigger the training hooks)."""

    def __init__(self, runner):
        self.runner = runner

    def after_create_session(self, session, coord):
        self.runner.attach(session)


class WorkerTraining:
    """One worker of a cluster: trains until the global step reaches max_step."""

    def __init__(self, conf, plan):
        self.conf = conf
        self.plan = plan
        self.local_steps = 0
        replicas = run.Replicas(tf1.train.replica_device_setter(
            cluster=tf1.train.ClusterSpec(plan.as_dict()),
            worker_device=f'/job:worker/task:{plan.task_index}'),
            conf.sync_replicas, plan.num_workers, plan.task_index)
        self.runner = run.Runner(conf, replicas)
        if not plan.is_chief:  # what _wait_for_chief polls
            with self.runner.graph.as_default():
                # global variables only: a worker's local ones (the sync optimizer's
                # local step) are its own to initialise
                self.uninitialized = tf1.report_uninitialized_variables(tf1.global_variables())

    def _restore_or_keep_initialised(self, scaffold, session):
        """The chief's init_fn: after the variables are initialised, loads the
        checkpoint to resume from when modeldir has one."""
        self.runner.attach(session)
        step = self.runner.restore(self.conf.reload_step)
        print(f'chief: initialised the variables, then restored checkpoint step {step} of '
              f'{self.conf.modeldir}' if step is not None else
              f'chief: initialised the variables ({self.conf.modeldir} has no checkpoint)',
              flush=True)

    def _wait_for_chief(self, server):
        """Returns once the chief has initialised (or restored) the variables: polled
        every POLL_S seconds, where the monitored session would wait 30 s between checks."""
        waited = time.perf_counter()
        with tf1.Session(server.target, graph=self.runner.graph,
                         config=device_filters(self.plan)) as sess:
            while len(sess.run(self.uninitialized)):
                if time.perf_counter() - waited > WAIT_FOR_CHIEF_S:
                    raise UserError(f'the chief (worker 0, {self.plan.worker_hosts[0]}) has not '
                                    f'initialised the model within {WAIT_FOR_CHIEF_S} s: start '
                                    f'it, with the same cluster flags')
                time.sleep(POLL_S)

    def _monitored_session(self, server):
        runner, plan = self.runner, self.plan
        hooks = [tf1.train.StopAtStepHook(last_step=self.conf.max_step),
                 _SessionCapture(runner)]
        if runner.net.sync_optimizer is not None:
            hooks.append(runner.net.sync_optimizer.make_session_run_hook(plan.is_chief))
        scaffold = tf1.train.Scaffold(init_op=runner.init_op, saver=runner.saver,
                                      init_fn=self._restore_or_keep_initialised)
        return tf1.train.MonitoredTrainingSession(
            master=server.target, is_chief=plan.is_chief, scaffold=scaffold, hooks=hooks,
            checkpoint_dir=None, save_checkpoint_secs=None, save_checkpoint_steps=None,
            save_summaries_steps=None, save_summaries_secs=None, log_step_count_steps=0,
            config=device_filters(plan, runner.session_config),
            stop_grace_period_secs=STOP_GRACE_S, max_wait_secs=WAIT_FOR_CHIEF_S)

    def train(self):
        """Joins the cluster and trains; returns the global step at the end."""
        conf, plan = self.conf, self.plan
        server = server_for(plan)
        role = 'chief' if plan.is_chief else 'worker'
        print(f'{role} {plan.task_index} at {plan.worker_hosts[plan.task_index]}: '
              f'{"synchronous" if conf.sync_replicas else "asynchronous"} training with '
              f'{plan.num_workers} workers and {len(plan.ps_hosts)} parameter servers',
              flush=True)
        if not plan.is_chief:
            self._wait_for_chief(server)
        with self.runner.graph.as_default(), _QuietCancelledQueueRunners(), \
                self._monitored_session(server) as sess, StopRequests() as stop:
            step = self._train_in(sess, stop)
        print(f'{role} {plan.task_index}: ran {self.local_steps} training steps of its own; '
              f'global step {step}', flush=True)
        if stop.signum:
            raise TrainingStopped(stop.signum)
        _report_finished(server, plan)
        return step

    def _train_in(self, sess, stop):
        """runner.train_loop in the monitored session, as this worker's Role."""
        conf, plan = self.conf, self.plan
        start = self.runner.step()
        if start >= conf.max_step:
            print(f'the global step is already {start} >= --max_step={conf.max_step}')
            return start
        role = run.Role(is_chief=plan.is_chief, task_index=plan.task_index,
                        num_workers=plan.num_workers,
                        images_per_step=conf.batch * (plan.num_workers if conf.sync_replicas
                                                      else 1),
                        shared_step=True)
        step, self.local_steps, prefix = run.train_loop(self.runner, role, start, sess, stop,
                                                        should_stop=sess.should_stop)
        if plan.is_chief:
            if stop.signum:
                print(f'stopped by {stop.name} at step {step}: saved {prefix}; run the same '
                      f'command to resume')
            else:
                print(f'reached step {step}: last checkpoint {prefix}')
        return step


def train_worker(conf, plan):
    """Trains as worker plan.task_index of the cluster; returns the final global step."""
    began = time.perf_counter()
    training = WorkerTraining(conf, plan)
    step = training.train()
    seconds = time.perf_counter() - began
    print(f'worker {plan.task_index}: {training.local_steps * conf.batch / seconds:.1f} '
          f'images/s of its own over {seconds:.0f} s', flush=True)
    return step
