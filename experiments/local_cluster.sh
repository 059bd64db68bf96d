#!/usr/bin/env bash
# A parameter-server cluster on this machine: 1 parameter server and WORKERS workers
# (default 2) on 127.0.0.1, free ports picked at start, one log per process.
#
#   bash experiments/local_cluster.sh                      # the default MNIST run, async
#   bash experiments/local_cluster.sh --sync_replicas      # synchronous updates
#   WORKERS=1 bash experiments/local_cluster.sh --max_step=500
#
# Extra arguments go to every process (give all of them the same flags). The run goes to
# RUN (default runs/local_cluster: modeldir, logdir, samples and the logs ps0.log,
# worker0.log, ...). The script waits for every process and exits non-zero when one
# fails; Ctrl-C stops all of them. On real hosts, start the same main.py command on each
# machine with its own --job_name/--task_index (see README).
set -uo pipefail
cd "$(dirname "$0")/.."

WORKERS=${WORKERS:-2}
RUN=${RUN:-runs/local_cluster}
PYTHON=${PYTHON:-python}
mkdir -p "$RUN"

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ps_hosts="127.0.0.1:$(free_port)"
worker_hosts="127.0.0.1:$(free_port)"
for ((i = 1; i < WORKERS; i++)); do worker_hosts+=",127.0.0.1:$(free_port)"; done

common=(--ps_hosts="$ps_hosts" --worker_hosts="$worker_hosts" --modeldir="$RUN/modeldir"
        --logdir="$RUN/logdir" --sampledir="$RUN/samples" "$@")
pids=()
stop_all() { kill "${pids[@]}" 2>/dev/null; }
trap 'stop_all; exit 130' INT TERM

echo "cluster: ps $ps_hosts, workers $worker_hosts; logs in $RUN/"
"$PYTHON" main.py "${common[@]}" --job_name=ps --task_index=0 > "$RUN/ps0.log" 2>&1 &
ps_pid=$!
for ((i = 0; i < WORKERS; i++)); do
  "$PYTHON" main.py "${common[@]}" --job_name=worker --task_index=$i > "$RUN/worker$i.log" 2>&1 &
  pids+=($!)
done
pids+=("$ps_pid")

status=0
for ((i = 0; i < WORKERS; i++)); do
  if ! wait "${pids[$i]}"; then
    echo "worker $i failed: see $RUN/worker$i.log" >&2
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  stop_all   # the parameter server would wait for the failed worker forever
fi
wait "$ps_pid" || { [ "$status" -ne 0 ] || { echo "ps failed: see $RUN/ps0.log" >&2; status=1; }; }
grep -h "images/s of its own\|reached step\|finished; exiting" "$RUN"/*.log
exit "$status"
