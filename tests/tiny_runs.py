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


def tiny_algorithm(**fields):
    """``(args, algorithm)`` as ``baselines.train`` builds them, on one env of the tiny model, CPU, one thread."""
    from stable_baselines3.common.env_util import make_vec_env

    from baselines.common.config import Args, env_kwargs_of
    from baselines.common.loading import build

    defaults = {"env": "TextGym/Sentiment-v0", "model": "tiny", "n_envs": 1, "device": "cpu", "torch_threads": 1}
    args = Args(**{**defaults, **fields})
    return args, build(args, make_vec_env(args.env, n_envs=1, seed=0, env_kwargs=env_kwargs_of(args)))
