#!/usr/bin/env bash
# PPO learning runs of the must-show: default model, one run per env id and seed, each run (training plus
# the initial and final evaluation on 32 fixed validation prompts) within 15 minutes on the 2-core CPU. Runs go one
# at a time with 2 torch threads (TEXTGYM_PARALLEL_RUNS=2 runs two at once with 1 thread each).
#   bash benchmarks/ppo_learning.sh [RUNS_DIR] ["ENV [ENV...]"] [SEEDS...]
# TEXTGYM_TRAIN_SECONDS overrides every id's training seconds (the checked-in results name what they ran with).
# A time budget makes the update count depend on the machine's speed that day; benchmarks/reproduce_run.py trains a
# run again on the steps it trained on (summary.json's timesteps_trained) and compares it (reproduction.md).
# Sentiment trains for 720 s, TRL's wall time in the peer figure, with 64 envs. The word-F1 (Dialogue), ROUGE
# (Summarization) and exact-answer (SparseCompletion) tasks train for 660 s (their evaluations are longer) with 32
# envs (1,024 steps per update: at commit 21266bf 64 envs made 6 updates in 420 s, and the policy moved only 1.3-3.7
# nats per reply from the reference), whiten rewards (their rewards are small beside the KL penalty), treat a reply
# cut by the token budget as the end of the episode, as evaluation does (--no-bootstrap-truncated), so that the policy learns to finish its
# replies, and take Monte Carlo returns (--gae-lambda 1.0): a reply's reward comes only at its end, and with lambda
# 0.95 the first tokens of a 48-token reply would see 0.95^48 = 9% of it and lean on a critic that is still learning.
# Summarization's episodes each read a 512-token article for a reply of at most 48 tokens: with 64 envs the first
# rollout outlasted the budget (2.6 env steps/s at commit 21266bf, half of it encoding articles) and the run took
# 17 minutes. So Summarization trains for 540 s on a pool of 256 articles, each played 4 episodes in a row by its env
# (--prompt-repeats: the KV cache keeps the article, which is read once for the 4 replies), with 32 envs of 16 steps.
# At commit fb7f60d that made only 2.2-9.5 env steps/s, because an article that fills the 512-token window slides
# it every step and is encoded again each time. So the pool holds only articles whose prompt leaves room for the
# 48-token reply (--max-prompt-tokens 464, 95% of the train split; evaluation keeps every validation article), and
# each update takes 1,024 steps (32 envs of 32) at learning rate 1e-4, so that a rollout ends replies and the KL
# controller sees whole replies (16-step rollouts of 48-token replies ended none).
# TEXTGYM_PPO_VARIANT=group trains with a group baseline instead (runs named ppo_<id>_group_s<seed>): each env plays
# a prompt of a pool of 4,096 (the whole split where it is smaller) 4 times in a row, and a reply's advantage is its
# return less the mean reward of the rollout's other replies to the same prompt (--group-baseline), not the critic's.
# A group needs two whole episodes of a prompt within one rollout, and 4 replies of SparseCompletion's 16-token
# budget take up to 64 steps: with 32 envs of 32 steps the baseline covered 3-17% of the steps once the envs drifted
# apart (commit 0bd9f4a), so the variant rolls out 16 envs of 64 steps (59-88%), the same 1,024 steps per update.
# TEXTGYM_PPO_EXTRA_ARGS is appended to every run's flags (the last of a repeated flag wins), for sweeps around a
# recipe; write sweep runs to a RUNS_DIR of their own, since the run names stay those of the recipe.
set -euo pipefail
runs="${1:-runs}"; env_ids="${2:-TextGym/Sentiment-v0}"; shift 2 || true
seeds=("${@:-0 1 2}")
threads=$(( ${TEXTGYM_PARALLEL_RUNS:-1} > 1 ? 1 : 2 ))
mkdir -p "$runs"
for env_id in $env_ids; do
  name=$(echo "${env_id#TextGym/}" | tr 'A-Z' 'a-z' | tr -d -c 'a-z0-9')
  case "$env_id" in
    TextGym/Sentiment-v0) task=(--max-train-seconds "${TEXTGYM_TRAIN_SECONDS:-720}" --n-envs 64) ;;
    TextGym/Summarization-v0) task=(--max-train-seconds "${TEXTGYM_TRAIN_SECONDS:-540}" --n-envs 32 --n-steps 32
             --learning-rate 1e-4 --train-prompts 256 --prompt-repeats 4 --max-prompt-tokens 464 --whiten-rewards
             --no-bootstrap-truncated --gae-lambda 1.0) ;;
    *) task=(--max-train-seconds "${TEXTGYM_TRAIN_SECONDS:-660}" --n-envs 32 --whiten-rewards --no-bootstrap-truncated
             --gae-lambda 1.0) ;;
  esac
  variant=()
  if [ "${TEXTGYM_PPO_VARIANT:-}" = group ]; then
    variant=(--train-prompts 4096 --prompt-repeats 4 --group-baseline --n-envs 16 --n-steps 64); name="${name}_group"
  elif [ -n "${TEXTGYM_PPO_VARIANT:-}" ]; then
    echo "TEXTGYM_PPO_VARIANT must be empty or 'group', got '${TEXTGYM_PPO_VARIANT}'" >&2; exit 2
  fi
  for seed in ${seeds[@]}; do
    python -m baselines.train --algo ppo --env "$env_id" --model default --seed "$seed" \
      --total-timesteps 10000000 --n-steps 32 --batch-size 256 --n-epochs 1 --learning-rate 3e-4 \
      --trainable-layers 8 --value-scale 10 --kl-coef 0.05 --target-kl-per-reply 6 "${task[@]}" \
      ${variant[@]+"${variant[@]}"} ${TEXTGYM_PPO_EXTRA_ARGS:-} \
      --eval-episodes 32 --torch-threads "$threads" \
      --no-progress-bar --sample-every 4 --out "$runs/ppo_${name}_s${seed}" > "$runs/ppo_${name}_s${seed}.log" 2>&1 &
    while [ "$(jobs -rp | wc -l)" -ge "${TEXTGYM_PARALLEL_RUNS:-1}" ]; do sleep 5; done
  done
done
wait
