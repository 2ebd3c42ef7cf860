#!/usr/bin/env bash
# PPO on CUDA: the throughput benchmark at 4 and 32 envs, then a short Sentiment training with
# the default model (64 envs, 180 s of training, validation every 32768 tokens). This is what
# produced benchmarks/results/cuda/ on an H200.
#   bash benchmarks/ppo_cuda.sh [RUNS_DIR] [SEEDS...]
set -euo pipefail
runs="${1:-runs/cuda}"; shift || true
seeds=("${@:-0 1}")
mkdir -p "$runs"
python benchmarks/ppo_throughput.py --device cuda | tee "$runs/ppo_throughput_4envs.txt"
python benchmarks/ppo_throughput.py --device cuda --collect-envs 32 --n-envs 32 --n-steps 32 --batch-size 256 \
  | tee "$runs/ppo_throughput_32envs.txt"
for seed in ${seeds[@]}; do
  python -m baselines.train --algo ppo --env TextGym/Sentiment-v0 --model default --seed "$seed" --device cuda \
    --total-timesteps 10000000 --max-train-seconds 180 --n-envs 64 --n-steps 32 --batch-size 512 --n-epochs 1 \
    --learning-rate 1e-4 --trainable-layers 8 --value-scale 10 --kl-coef 0.05 --target-kl-per-reply 6 \
    --eval-episodes 32 --eval-every 32768 --torch-threads 4 --no-progress-bar --sample-every 16 \
    --out "$runs/ppo_sentiment_s$seed" 2>&1 | tee "$runs/ppo_sentiment_s$seed.log"
done
python benchmarks/summarize_runs.py "$runs"/ppo_sentiment_s* --title "PPO on Sentiment, CUDA, 180 s of training" \
  --png "$runs/ppo_sentiment_cuda.png" --markdown "$runs/ppo_sentiment_cuda.md"
