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
# TEXTGYM_DQN_VARIANT=pool256 (give it a RUNS_DIR of its own: the run names stay those of the recipe): a pool of 256
# train prompts, 6000 transitions or 700 s of training, and 256 validation prompts for every score. The references
# run first and store the validation candidate sets in RUNS_DIR/proposals_<id>, which every run then reads (each
# run also evaluates the LM's top candidate itself, --initial-eval, so its gain is paired). On SparseCompletion the
# first 32 validation prompts hold 2 where another candidate beats the LM's top, the first 256 hold 29: 32 prompts
# cannot show a gain there. TEXTGYM_DQN_EXTRA_ARGS is appended to every run's flags (the last of a repeated flag
# wins), e.g. "--q-hidden 0 --q-weight-decay 0.05" for a linear head with weight decay; the stored variant also
# gives it to the store script, so that e.g. --feature-layer stores the features the runs read.
# TEXTGYM_DQN_VARIANT=stored: the pool256 variant on a pool of TEXTGYM_DQN_POOL prompts (default 512) drawn with pool
# seed 0 for every run, whose first-turn candidate sets benchmarks/store_pool_proposals.py generates once, before the
# runs, into RUNS_DIR/train_sets_<id> (--train-proposal-cache), with the Q head's features of those first turns and
# of the evaluation's 256 validation prompts in RUNS_DIR/features_<id> (--feature-cache): the seeds share both and
# spend their time budget learning (a Summarization set costs seconds to generate and its features about one more on
# one thread, so a run that made its own pool's could not).
# 12000 transitions or 700 s of training; the references are not played again when their result file exists.
# With TEXTGYM_DQN_EXTRA_ARGS="--guide-model DIR --q-features scalars --q-hidden 0" (DIR from python -m baselines.sft)
# the store also writes each first turn's guide reply into the features, and the runs' head reads the scalars only.
#   bash benchmarks/dqn_learning.sh [RUNS_DIR] [SEEDS...]
set -euo pipefail
runs="${1:-runs}"; shift || true
seeds=("${@:-0 1 2}")
ids="${TEXTGYM_DQN_IDS:-TextGym/DialogueCandidate-v0 TextGym/SummarizationCandidate-v0 TextGym/SparseCompletionCandidate-v0 TextGym/SentimentCandidate-v0}"
mkdir -p "$runs"
throttle() { while [ "$(jobs -rp | wc -l)" -ge "${TEXTGYM_PARALLEL_RUNS:-2}" ]; do sleep 5; done; }
for env_id in $ids; do
  name=$(echo "${env_id#TextGym/}" | sed 's/Candidate-v0//' | tr 'A-Z' 'a-z')
  if [ "${TEXTGYM_DQN_VARIANT:-}" = pool256 ] || [ "${TEXTGYM_DQN_VARIANT:-}" = stored ]; then
    cache="$runs/proposals_${name}"
    if [ ! -f "$runs/dqn_refs_${name}.json" ]; then
      python -m baselines.dqn --env "$env_id" --model default --episodes 256 --torch-threads 2 \
        --proposal-cache "$cache" --out "$runs/dqn_refs_${name}.json" > "$runs/dqn_refs_${name}.log" 2>&1
    fi
    recipe=(--train-prompts 256 --total-timesteps 6000 --max-train-seconds 700 --eval-episodes 256 --initial-eval
            --proposal-cache "$cache")
    if [ "${TEXTGYM_DQN_VARIANT}" = stored ]; then
      pool=(--train-prompts "${TEXTGYM_DQN_POOL:-512}" --pool-seed 0 --proposal-variants 1
            --train-proposal-cache "$runs/train_sets_${name}" --feature-cache "$runs/features_${name}")
      python benchmarks/store_pool_proposals.py --algo dqn --env "$env_id" --model default "${pool[@]}" \
        --proposal-cache "$cache" --eval-episodes 256 ${TEXTGYM_DQN_EXTRA_ARGS:-} --torch-threads 2 \
        > "$runs/store_${name}.log" 2>&1
      recipe+=("${pool[@]}" --total-timesteps 12000)
    fi
  elif [ -n "${TEXTGYM_DQN_VARIANT:-}" ]; then
    echo "TEXTGYM_DQN_VARIANT must be empty, 'pool256' or 'stored', got '${TEXTGYM_DQN_VARIANT}'" >&2; exit 2
  else
    python -m baselines.dqn --env "$env_id" --model default \
      --episodes 32 --torch-threads 1 --out "$runs/dqn_refs_${name}.json" > "$runs/dqn_refs_${name}.log" 2>&1 &
    throttle
    recipe=(--train-prompts 96 --total-timesteps 3000 --max-train-seconds 300 --eval-episodes 32 --no-initial-eval)
  fi
  for seed in ${seeds[@]}; do
    python -m baselines.train --algo dqn --env "$env_id" --model default --seed "$seed" \
      --n-envs 16 --proposal-variants 1 "${recipe[@]}" ${TEXTGYM_DQN_EXTRA_ARGS:-} --torch-threads 1 --no-progress-bar \
      --out "$runs/dqn_${name}_s${seed}" > "$runs/dqn_${name}_s${seed}.log" 2>&1 &
    throttle
  done
done
wait
