#!/usr/bin/env bash
# The best recipe's ablation on the bundled MNIST: configs/mnist_best.flags trained at one
# common, shorter budget with each lever removed (or, for stage 2's gradient L1 and SSIM,
# which the recipe leaves out, added; and a 16-d latent instead of 32) in turn, then
# every run evaluated alike and the table written to OUT/best_recipe_ablation.md.
#
#   bash experiments/ablation.sh                     # 2,000 steps, 5,000 samples each
#   STEPS=20000 SAMPLES=10000 bash experiments/ablation.sh   # the recipe's own budget
#
# The averaged weights and the mixture prior act at inference only: their rows evaluate
# the full recipe's run with --inference_weights=last, --prior_components=10 and
# --sample_prior=normal. The variants are named for the flag file's 200 components. Run again,
# the script resumes a stopped training (a finished one is skipped by main.py) and skips
# the evaluations already written.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${ROOT:-runs/ablation}
OUT=${OUT:-docs}
STEPS=${STEPS:-2000}
SAMPLES=${SAMPLES:-5000}
PYTHON=${PYTHON:-python}
declare -A REMOVED=(  # run name => the flag that takes its lever out of (or into) the recipe
  [recipe]=''
  [no_capacity]='--start_channel_num=16'
  [no_cosine]='--lr_schedule=constant'
  [no_learned_sigma]='--nolearn_sigma'
  [gradient_loss]='--refine_gradient_weight=0.5'
  [ssim_loss]='--refine_ssim_weight=1'
  [latent16]='--latent_len=16'
)

evaluate() {  # run name, evaluation variant (runner.evaluation_variant), its flags
  local name=$1 variant=$2
  shift 2
  local json="$ROOT/$name/model/evaluation-$STEPS${variant:+-$variant}.json"
  if [ -f "$json" ]; then
    echo "== $name: $json is there"
    return
  fi
  "$PYTHON" main.py --action=evaluate "${common[@]}" --eval_samples="$SAMPLES" \
    --noeval_fid_reconstructions "$@"
}

for name in recipe latent16 no_cosine no_learned_sigma no_capacity gradient_loss ssim_loss; do
  common=(--flagfile=configs/mnist_best.flags ${REMOVED[$name]} --modeldir="$ROOT/$name/model"
          --logdir="$ROOT/$name/log" --sampledir="$ROOT/$name/samples")
  echo "== $name: training $STEPS steps ${REMOVED[$name]}"
  "$PYTHON" main.py "${common[@]}" --max_step="$STEPS" --save_step="$STEPS"
  evaluate "$name" gmm200
  if [ "$name" = recipe ]; then
    evaluate "$name" gmm200-last --inference_weights=last
    evaluate "$name" gmm10 --prior_components=10
    evaluate "$name" '' --sample_prior=normal
  fi
done
"$PYTHON" experiments/recipe_report.py --ablation="$ROOT" --out="$OUT" --name=best_recipe
