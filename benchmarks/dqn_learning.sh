#!/usr/bin/env bash
# DQN learning runs of the must-show: for each candidate-level id, the three references
# (random candidate, the LM's top candidate, best-of-K oracle) and 3 seeds of DQN, default model,
# the registered env arguments (K=4 candidates), 32 fixed validation prompts (seeds 10000+i) for every score.
# Proposals cost nearly all of a transition, so training runs on a pool of 96 train prompts
# (--train-prompts) and keeps one candidate set per context (--proposal-variants 1): the first
# visit of a context generates its set, later visits reuse it, and once the pool's sets exist a
# transition costs the Q head's update only (about 14 transitions/s against 1.2 without reuse,
# SentimentCandidate-v0, 2 threads). Evaluation proposes afresh, on the validation split.
# Each run stops training at --max-train-seconds (final evaluation on top), within 15 minutes.
# TEXTGYM_PARALLEL_RUNS jobs at a time (default 2), one torch thread each.
#   bash benchmarks/dqn_learning.sh [RUNS_DIR] [SEEDS...]
set -euo pipefail
runs="${1:-runs}"; shift || true
seeds=("${@:-0 1 2}")
ids="${TEXTGYM_DQN_IDS:-TextGym/DialogueCandidate-v0 TextGym/SummarizationCandidate-v0 TextGym/SparseCompletionCandidate-v0 TextGym/SentimentCandidate-v0}"
mkdir -p "$runs"
throttle() { while [ "$(jobs -rp | wc -l)" -ge "${TEXTGYM_PARALLEL_RUNS:-2}" ]; do sleep 5; done; }
for env_id in $ids; do
  name=$(echo "${env_id#TextGym/}" | sed 's/Candidate-v0//' | tr 'A-Z' 'a-z')
  python -m baselines.dqn --env "$env_id" --model default \
    --episodes 32 --torch-threads 1 --out "$runs/dqn_refs_${name}.json" > "$runs/dqn_refs_${name}.log" 2>&1 &
  throttle
  for seed in ${seeds[@]}; do
    python -m baselines.train --algo dqn --env "$env_id" --model default --seed "$seed" \
      --n-envs 16 --train-prompts 96 --proposal-variants 1 \
      --total-timesteps 3000 --max-train-seconds 300 \
      --eval-episodes 32 --no-initial-eval --torch-threads 1 --no-progress-bar \
      --out "$runs/dqn_${name}_s${seed}" > "$runs/dqn_${name}_s${seed}.log" 2>&1 &
    throttle
  done
done
wait
