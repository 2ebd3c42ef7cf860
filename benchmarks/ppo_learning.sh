#!/usr/bin/env bash
# PPO learning runs of the must-show: default model, one run per seed, each run (training plus the
# initial and final evaluation on 32 fixed validation prompts) within 15 minutes on the 2-core CPU. Runs go
# one at a time with 2 torch threads (TEXTGYM_PARALLEL_RUNS=2 runs two at once; give each 1 thread then).
#   bash benchmarks/ppo_learning.sh [RUNS_DIR] [ENV] [SEEDS...]
# Sentiment trains for 720 s, TRL's wall time in the peer figure, with 64 envs. Dialogue trains for 660 s (its
# evaluations are longer) with 64 envs, whitens rewards (its word-F1 rewards are small beside the KL penalty),
# treats a reply cut by the token budget as the end of the episode, as evaluation does
# (--no-bootstrap-truncated), so that the policy learns to finish its replies and reach the later turns, and
# takes Monte Carlo returns (--gae-lambda 1.0): a reply's word-F1 comes only at its end, and with lambda 0.95
# the first tokens of a 48-token reply would see 0.95^48 = 9% of it and lean on a critic that is still learning.
set -euo pipefail
runs="${1:-runs}"; env_id="${2:-TextGym/Sentiment-v0}"; shift 2 || true
seeds=("${@:-0 1 2}")
name=$(echo "${env_id#TextGym/}" | tr 'A-Z' 'a-z' | tr -d -c 'a-z0-9')
case "$env_id" in
  TextGym/Dialogue-v0) task=(--max-train-seconds 660 --n-envs 64 --whiten-rewards --no-bootstrap-truncated --gae-lambda 1.0) ;;
  *) task=(--max-train-seconds 720 --n-envs 64) ;;
esac
threads=$(( ${TEXTGYM_PARALLEL_RUNS:-1} > 1 ? 1 : 2 ))
mkdir -p "$runs"
for seed in ${seeds[@]}; do
  python -m baselines.train --algo ppo --env "$env_id" --model default --seed "$seed" \
    --total-timesteps 10000000 --n-steps 32 --batch-size 256 --n-epochs 1 --learning-rate 3e-4 \
    --trainable-layers 8 --value-scale 10 --kl-coef 0.05 --target-kl-per-reply 6 "${task[@]}" \
    --eval-episodes 32 --torch-threads "$threads" \
    --no-progress-bar --sample-every 4 --out "$runs/ppo_${name}_s${seed}" > "$runs/ppo_${name}_s${seed}.log" 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge "${TEXTGYM_PARALLEL_RUNS:-1}" ]; do sleep 5; done
done
wait
