"""The cluster of a distributed run, from the flags or from TF_CONFIG (no TensorFlow).

    --ps_hosts=a:2222 --worker_hosts=b:2222,c:2222 --job_name=worker --task_index=0

TF_CONFIG (read when --job_name is not given) may also name the cluster:
    {"cluster": {"ps": ["a:2222"], "worker": ["b:2222", "c:2222"]},
     "task": {"type": "worker", "index": 0}}
A "chief" job there becomes worker 0 and shifts the workers by one.
"""
import collections
import json
import os

from utils.run.errors import UserError

JOBS = ('ps', 'worker')

WORKER_SEED_STRIDE = 1000003  # keeps the workers' seeds apart from nearby --random_seed values


class Plan(collections.namedtuple('Plan', 'ps_hosts worker_hosts job_name task_index')):
    """One process of a cluster: every host, and this process's job and index."""

    @property
    def is_chief(self):
        """Worker 0 writes checkpoints, summaries and samples."""
        return self.job_name == 'worker' and self.task_index == 0

    @property
    def num_workers(self):
        """How many workers the cluster has."""
        return len(self.worker_hosts)

    def as_dict(self):
        """The cluster as {job: [host:port, ...]} (tf.train.ClusterSpec's input)."""
        return {'ps': list(self.ps_hosts), 'worker': list(self.worker_hosts)}


def plan_from(conf, environ=None):
    """The Plan of this process, or None when it is not part of a cluster.

    Raises UserError when the cluster flags (or TF_CONFIG) are incomplete or wrong.
    """
    environ = os.environ if environ is None else environ
    if conf.job_name or conf.ps_hosts or conf.worker_hosts:
        plan = Plan(list(conf.ps_hosts), list(conf.worker_hosts), conf.job_name,
                    conf.task_index)
        source = 'the cluster flags'
    elif environ.get('TF_CONFIG'):
        plan, source = plan_from_tf_config(environ['TF_CONFIG']), 'TF_CONFIG'
    else:
        return None
    check_plan(plan, source)
    return plan


def plan_from_tf_config(text):
    """The Plan that a TF_CONFIG JSON string describes."""
    try:
        config = json.loads(text)
        cluster, task = config['cluster'], config['task']
        chief = list(cluster.get('chief', []))
        job, index = task['type'], int(task['index'])
        ps_hosts, worker_hosts = list(cluster.get('ps', [])), chief + list(cluster.get('worker', []))
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f'TF_CONFIG is not a cluster description ({err}): it needs '
                        f'{{"cluster": {{"ps": [...], "worker": [...]}}, "task": {{"type": '
                        f'"worker", "index": 0}}}}') from None
    if job == 'chief':
        job, index = 'worker', 0
    elif job == 'worker':
        index += len(chief)
    return Plan(ps_hosts, worker_hosts, job, index)


def check_plan(plan, source):
    """Raises UserError unless `plan` names a job, its task, and at least one
    parameter server and one worker, each host as host:port."""
    if plan.job_name not in JOBS:
        raise UserError(f'{source}: job "{plan.job_name}" is not one of {", ".join(JOBS)}: '
                        f'give --job_name=ps or --job_name=worker with --ps_hosts and '
                        f'--worker_hosts')
    for job, hosts in (('ps', plan.ps_hosts), ('worker', plan.worker_hosts)):
        if not hosts:
            raise UserError(f'{source}: no {job} hosts: parameter-server training needs '
                            f'--ps_hosts and --worker_hosts, each host:port,...')
        for host in hosts:
            name, _, port = host.rpartition(':')
            if not name or not port.isdigit():
                raise UserError(f'{source}: "{host}" in the {job} hosts is not host:port')
    everyone = plan.ps_hosts + plan.worker_hosts
    if len(set(everyone)) != len(everyone):
        raise UserError(f'{source}: a host:port appears twice among the ps and worker hosts')
    count = len(plan.ps_hosts if plan.job_name == 'ps' else plan.worker_hosts)
    if not 0 <= plan.task_index < count:
        raise UserError(f'{source}: task index {plan.task_index} is not a {plan.job_name} of '
                        f'the cluster: give --task_index from 0 to {count - 1}')


def worker_seed(seed, task_index):
    """The data-order seed of a worker: the run's seed for the chief (a one-worker
    cluster reads what a single process reads), a seed of its own for the others."""
    return seed + WORKER_SEED_STRIDE * task_index
