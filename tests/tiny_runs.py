"""The smallest baselines.train run (tiny model, PPO on Sentiment), shared by the tests that train."""

TINY_RUN = [
    "--env",
    "TextGym/Sentiment-v0",
    "--model",
    "tiny",
    "--n-envs",
    "2",
    "--n-steps",
    "8",
    "--batch-size",
    "16",
    "--n-epochs",
    "1",
    "--eval-episodes",
    "2",
    "--max-reply-tokens",
    "6",
    "--torch-threads",
    "1",
    "--no-progress-bar",
]
