#!/usr/bin/env bash
# PPO learning runs of the must-show: default model, 3 seeds, each run within 15 minutes
# on a 2-core CPU (training stops at --max-train-seconds; initial and final evaluations on 32
# fixed validation prompts come on top). Two runs at a time (TEXTGYM_PARALLEL_RUNS), one torch thread each.
#   bash benchmarks/ppo_learning.sh [RUNS_DIR] [ENV] [SEEDS...]
set -euo pipefail
runs="${1:-runs}"; env_id="${2:-TextGym/Sentiment-v0}"; shift 2 || true
seeds=("${@:-0 1 2}")
name=$(echo "${env_id#TextGym/}" | tr 'A-Z' 'a-z' | tr -d -c 'a-z0-9')
for seed in ${seeds[@]}; do
  python -m baselines.train --algo ppo --env "$env_id" --model default --seed "$seed" \
    --total-timesteps 100000 --max-train-seconds 660 --n-envs 16 --n-steps 32 --batch-size 128 --n-epochs 1 \
    --learning-rate 3e-4 --trainable-layers 8 --value-scale 10 --kl-coef 0.05 --target-kl-per-reply 6 \
    --eval-episodes 32 --torch-threads 1 \
    --no-progress-bar --sample-every 4 --out "$runs/ppo_${name}_s${seed}" > "$runs/ppo_${name}_s${seed}.log" 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge "${TEXTGYM_PARALLEL_RUNS:-2}" ]; do sleep 5; done
done
wait
