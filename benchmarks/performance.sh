#!/usr/bin/env bash
# Every measurement of README "Performance", in one run on one machine:
#   bash benchmarks/performance.sh [mnist|celeba|all] 2>&1 | tee performance.log
# Needs torch for the PyTorch rows (not in requirements.txt):
#   pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WHICH=${1:-all}

tf_row() {  # label, flags...  (a failed row, e.g. killed for memory, does not stop the rest)
  local label=$1; shift
  "$PYTHON" benchmarks/train_step.py --label="$label" "$@" 2>&1 | grep -E '^\| |^\{' \
    || echo "| $label | failed |"
}
torch_row() {
  local label=$1; shift
  "$PYTHON" benchmarks/torch_train_step.py --label="$label" "$@" 2>&1 | grep -E '^\| |^\{' \
    || echo "| $label | failed |"
}

if [[ $WHICH == mnist || $WHICH == all ]]; then
  for options in "" "--fused_batch_norm" "--upsample=transpose" \
      "--fused_batch_norm --upsample=transpose" "--data_format=NCHW" "--xla" \
      "--intra_op_threads=1 --inter_op_threads=2" "--batch=256" "--fused_batch_norm --batch=256"; do
    # shellcheck disable=SC2086
    tf_row "mnist ${options:-default}" $options
  done
  torch_row "mnist" ; torch_row "mnist" --channels_last
fi
if [[ $WHICH == celeba || $WHICH == all ]]; then
  # the flag file turns fused batch norm on; the first row turns it off again
  celeba=(--flagfile=configs/celeba128.flags --warmup=2 --predict_batch=16)
  tf_row "celeba128 --nofused_batch_norm" "${celeba[@]}" --nofused_batch_norm
  tf_row "celeba128 flag file (fused batch norm)" "${celeba[@]}"
  # the other options, on top of the flag file: 5 timed steps each (a step takes ~15 s)
  for options in "--upsample=transpose" "--xla"; do
    # shellcheck disable=SC2086
    tf_row "celeba128 $options (5 steps)" "${celeba[@]}" --steps=5 $options
  done
  # NCHW needs ~22 GB on this CPU: one timed step
  tf_row "celeba128 --data_format=NCHW (1 step)" "${celeba[@]}" --steps=1 --warmup=0 \
    --data_format=NCHW
  torch_row "celeba128" --flagfile=configs/celeba128.flags --warmup=2 --channels_last
  torch_row "celeba128 (5 steps)" --flagfile=configs/celeba128.flags --warmup=1 --steps=5
fi
