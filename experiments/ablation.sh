#!/usr/bin/env bash
# The best recipe's ablation on the bundled MNIST: configs/mnist_best.flags trained at one
# common, shorter budget with each lever removed in turn, then every run evaluated alike
# and the table written to OUT/best_recipe_ablation.md.
#
#   bash experiments/ablation.sh                     # 2,000 steps, 5,000 samples each
#   STEPS=19000 SAMPLES=10000 bash experiments/ablation.sh   # the recipe's own budget
#
# The averaged weights and the mixture prior act at inference only: their rows evaluate
# the full recipe's run with --inference_weights=last and --sample_prior=normal. Each
# run resumes when the script is run again; a finished one is skipped by main.py.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ROOT:-runs/ablation}
OUT=${OUT:-docs}
STEPS=${STEPS:-2000}
SAMPLES=${SAMPLES:-5000}
PYTHON=${PYTHON:-python}
declare -A REMOVED=(  # run name => the flag that takes its lever out of the recipe
  [recipe]=''
  [no_capacity]='--start_channel_num=16'
  [no_cosine]='--lr_schedule=constant'
  [no_learned_sigma]='--nolearn_sigma'
  [no_gradient_loss]='--refine_gradient_weight=0'
)

for name in recipe no_capacity no_cosine no_learned_sigma no_gradient_loss; do
  common=(--flagfile=configs/mnist_best.flags ${REMOVED[$name]} --modeldir="$ROOT/$name/model"
          --logdir="$ROOT/$name/log" --sampledir="$ROOT/$name/samples")
  echo "== $name: training $STEPS steps ${REMOVED[$name]}"
  "$PYTHON" main.py "${common[@]}" --max_step="$STEPS" --save_step="$STEPS"
  evaluate=("$PYTHON" main.py --action=evaluate "${common[@]}" --eval_samples="$SAMPLES"
            --noeval_fid_reconstructions)
  "${evaluate[@]}"
  if [ "$name" = recipe ]; then
    "${evaluate[@]}" --inference_weights=last
    "${evaluate[@]}" --sample_prior=normal
  fi
done
"$PYTHON" experiments/recipe_report.py --ablation="$ROOT" --out="$OUT" --name=best_recipe
