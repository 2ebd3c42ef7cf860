#!/usr/bin/env bash
# PPO on CUDA: the throughput benchmark at 4 and 32 envs (alone), then 180-s trainings with the default model side
# by side on the one GPU: Sentiment seeds 0 and 1 (64 envs, validation every 32768 tokens) and Summarization seed 0
# (ppo_learning.sh's Summarization recipe with 64 envs). This is what produced benchmarks/results/cuda/ on an H200.
#   bash benchmarks/ppo_cuda.sh [RUNS_DIR]
set -euo pipefail
runs="${1:-runs/cuda}"
mkdir -p "$runs"
python benchmarks/ppo_throughput.py --device cuda | tee "$runs/ppo_throughput_4envs.txt"
python benchmarks/ppo_throughput.py --device cuda --collect-envs 32 --n-envs 32 --n-steps 32 --batch-size 256 \
  | tee "$runs/ppo_throughput_32envs.txt"
common=(--algo ppo --model default --device cuda --total-timesteps 10000000 --max-train-seconds 180 --n-envs 64
  --n-steps 32 --batch-size 512 --n-epochs 1 --learning-rate 1e-4 --trainable-layers 8 --value-scale 10
  --kl-coef 0.05 --target-kl-per-reply 6 --eval-episodes 32 --eval-every 32768 --torch-threads 4 --no-progress-bar
  --sample-every 16)
for seed in 0 1; do
  python -m baselines.train "${common[@]}" --env TextGym/Sentiment-v0 --seed "$seed" \
    --out "$runs/ppo_sentiment_s$seed" > "$runs/ppo_sentiment_s$seed.log" 2>&1 &
done
python -m baselines.train "${common[@]}" --env TextGym/Summarization-v0 --seed 0 --train-prompts 256 --prompt-repeats 4 \
  --max-prompt-tokens 464 --whiten-rewards --no-bootstrap-truncated --gae-lambda 1.0 \
  --out "$runs/ppo_summarization_s0" > "$runs/ppo_summarization_s0.log" 2>&1 &
wait
python benchmarks/summarize_runs.py "$runs"/ppo_sentiment_s* --title "PPO on Sentiment, CUDA (H200), 180 s of training" \
  --png "$runs/ppo_sentiment_cuda.png" --markdown "$runs/ppo_sentiment_cuda.md"
python benchmarks/summarize_runs.py "$runs"/ppo_summarization_s0 \
  --title "PPO on Summarization, CUDA (H200), 180 s of training" \
  --png "$runs/ppo_summarization_cuda.png" --markdown "$runs/ppo_summarization_cuda.md"
