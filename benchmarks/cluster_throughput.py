"""Throughput of parameter-server training on this machine's loopback: 1 parameter
server and 1 or 2 workers on 127.0.0.1 (async and --sync_replicas), against one
process and against 2 towers on logical CPUs, all with the same model and batch.

    python benchmarks/cluster_throughput.py [--steps=400] [main.py flags ...]

Each setting trains from scratch for --steps global steps with the chief writing a
summary every --interval steps; images/s is the median over the intervals between
summaries (their wall times; the first interval, with start-up, is left out), for the
whole cluster: a global step is one batch when asynchronous, one batch per worker when
synchronous. CPU seconds of every process (from wait4) show where the time goes; the
bytes a step moves between a worker and the parameter server are counted from the
checkpoint's variables. Prints a markdown table and one JSON line per setting.
"""
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIMIZER_SUFFIXES = ('/Adam', '/Adam_1', 'beta1_power', 'beta2_power', 'global_step')
TIMEOUT_S = 900


def free_ports(count):
    """`count` distinct free ports of 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(('127.0.0.1', 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def start(args, log_path):
    with open(log_path, 'w') as log:
        return subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *args],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_cpu_seconds(process):
    """Waits for `process`; returns its user + system CPU seconds (raises on failure)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f'{process.args[-2:]} exited with {process.returncode}')
    return usage.ru_utime + usage.ru_stime


def interval_rates(logdir, images_per_step):
    """images/s between consecutive train/ summaries, the first interval left out."""
    points = []
    for path in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(value.tag == 'train/total' for value in event.summary.value):
                points.append((event.step, event.wall_time))
    points.sort()
    return [(b_step - a_step) * images_per_step / (b_time - a_time)
            for (a_step, a_time), (b_step, b_time) in zip(points[1:], points[2:])]


def variable_bytes(modeldir):
    """Bytes of the model's variables (what a worker reads each step; its gradients
    are as large), leaving out the optimizer's own state, which stays on the ps."""
    prefix = sorted(glob.glob(os.path.join(modeldir, '*.index')))[-1][:-len('.index')]
    total = 0
    for name, shape in tf.train.list_variables(prefix):
        if not name.endswith(OPTIMIZER_SUFFIXES):
            count = 1
            for size in shape:
                count *= size
            total += 4 * count
    return total


def run_setting(name, workers, extra, common, root):
    """Trains one setting; returns its measurements."""
    folder = os.path.join(root, name)
    flags = [f'--modeldir={folder}/model', f'--logdir={folder}/log',
             f'--sampledir={folder}/samples', *common, *extra]
    os.makedirs(folder)
    processes = {}
    if workers:
        ps_port, *worker_ports = free_ports(1 + workers)
        flags += [f'--ps_hosts=127.0.0.1:{ps_port}', '--worker_hosts=' + ','.join(
            f'127.0.0.1:{port}' for port in worker_ports)]
        processes['ps'] = start(flags + ['--job_name=ps', '--task_index=0'],
                                f'{folder}/ps.log')
        for index in range(workers):
            processes[f'worker{index}'] = start(
                flags + ['--job_name=worker', f'--task_index={index}'],
                f'{folder}/worker{index}.log')
    else:
        processes['process'] = start(flags, f'{folder}/process.log')
    began = time.perf_counter()
    cpu = {}
    for key in [key for key in processes if key != 'ps'] + ['ps'] * ('ps' in processes):
        cpu[key] = wait_cpu_seconds(processes[key])
    seconds = time.perf_counter() - began
    batch = int([flag for flag in flags if flag.startswith('--batch=')][-1].split('=')[1])
    # a synchronous global step is one batch per worker
    images_per_step = batch * (workers if '--sync_replicas' in extra else 1)
    rates = interval_rates(f'{folder}/log', images_per_step)
    return {'setting': name, 'workers': workers, 'images_per_step': images_per_step,
            'images_per_s': statistics.median(rates),
            'rate_min': min(rates), 'rate_max': max(rates), 'intervals': len(rates),
            'cpu_s': {key: round(value, 1) for key, value in cpu.items()},
            'wall_s': round(seconds, 1), 'variable_bytes': variable_bytes(f'{folder}/model')}


SETTINGS = [  # name, workers (0 = no cluster), flags of the setting
    ('one process', 0, []),
    ('2 towers, logical CPUs', 0, ['--num_gpus=2']),
    ('1 worker, async', 1, []),
    ('2 workers, async', 2, []),
    ('1 worker, sync', 1, ['--sync_replicas']),
    ('2 workers, sync', 2, ['--sync_replicas']),
]


def table(results, steps):
    """The markdown table of the results."""
    base = results[0]['images_per_s']
    lines = ['| setting | images/s (median, min–max) | × one process | CPU s per 1000 '
             'images: workers / ps |', '|---|---|---|---|']
    for result in results:
        images = steps * result['images_per_step']
        worker_cpu = sum(v for k, v in result['cpu_s'].items() if k != 'ps')
        ps_cpu = result['cpu_s'].get('ps')
        lines.append(f'| {result["setting"]} | {result["images_per_s"]:.0f} '
                     f'({result["rate_min"]:.0f}–{result["rate_max"]:.0f}) | '
                     f'{result["images_per_s"] / base:.2f} | {1000 * worker_cpu / images:.1f} / '
                     f'{"-" if ps_cpu is None else f"{1000 * ps_cpu / images:.1f}"} |')
    return '\n'.join(lines)


def main(argv):
    """Runs every setting and prints the table."""
    steps, interval, passed = 400, 25, []
    for arg in argv:
        if arg.startswith('--steps='):
            steps = int(arg.split('=')[1])
        elif arg.startswith('--interval='):
            interval = int(arg.split('=')[1])
        else:
            passed.append(arg)
    common = ['--valid_data=', '--batch=64', f'--max_step={steps}', f'--save_step={steps}',
              f'--summary_step={interval}', *passed]
    root = tempfile.mkdtemp(prefix='cluster_throughput_')
    results = []
    try:
        for name, workers, extra in SETTINGS:
            result = run_setting(name, workers, extra, common, root)
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f'\n{os.cpu_count()} CPU cores, {steps} global steps per setting, images/s over '
          f'{interval}-step intervals; a worker moves {results[0]["variable_bytes"] / 1e6:.2f} MB '
          f'of variables in and as many gradient bytes out per step')
    print(table(results, steps))


if __name__ == '__main__':
    main(sys.argv[1:])
