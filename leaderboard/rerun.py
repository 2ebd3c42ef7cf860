"""Re-run verification: play each run's checkpoint on prompts its submitter never saw.

Re-scoring proves the generations earn the claimed rewards, not that the policy wrote them:
generations picked as the best of many samples, or written by another system, re-score
perfectly. So ``verify --rerun --secret-seed N`` loads each run's checkpoint
(``checkpoint.json`` + ``policy.safetensors``, read with safetensors and JSON only, through
:func:`baselines.common.loading.load_trained`) and plays the track's number of episodes with
the evaluation its algorithm's entry in :data:`baselines.algorithms.ALGOS` names (``ppo``:
the LM samples, or replies greedily if the bundle says so; ``dqn``: the greedy Q choice) on
the track's split, episode ``i`` reset with seed ``N + i``. ``N`` is given at verify time;
it is in neither the repository nor the bundle, and the entry stores only its SHA-256.

The claim holds when, for every run, the re-run mean lies in the run's claimed 95% CI
widened on each side by :data:`RERUN_K` standard errors of the re-run (sample standard
deviation over the square root of the episodes)::

    claimed_low - K * se_rerun <= rerun_mean <= claimed_high + K * se_rerun

For an honest bundle the re-run mean and the claimed mean differ only by sampling noise, so
with K = 3 a false rejection needs a deviation of more than about 3.5 combined standard
errors (p < 0.001 when the CI and the re-run have similar spread).

Before anything is loaded, the checkpoint's metadata must name the bundle's env, env
arguments and model (a model name or hub id, never a local path), an algorithm of the table
and a compatible textgym version, and its base model must be the model and revision the
bundle claims (:func:`leaderboard.checkpoints.check_checkpoint_base`); its files must be
regular files inside the bundle within the size limits. A checkpoint of format version 2
holds only the trained tensors: loading rebuilds the base model by name and refuses it when
the weights here have another SHA-256 than the trainer's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from baselines.algorithms import ALGOS
from baselines.common.config import Args
from leaderboard import safejson
from leaderboard.checkpoints import (
    check_checkpoint_base,
    checkpoint_directory,
    read_checkpoint_metadata,
)
from leaderboard.tracks import effective_env_kwargs, textgym_compatible
from leaderboard.verify import Bundle, Report
from textgym.data import looks_like_local_path
from textgym.stats import standard_error

#: Standard errors of the re-run by which the claimed CI is widened.
RERUN_K = 3.0
#: Checkpoint algorithms a re-run can replay: those of the algorithm table.
RERUN_ALGOS = tuple(ALGOS)
_SEED_LIMIT = 2**32


def seed_commitment(secret_seed: int) -> str:
    """SHA-256 of the secret seed's decimal digits: stored instead of the seed.

    >>> seed_commitment(7)[:16]
    '7902699be42c8a8e'
    """
    return hashlib.sha256(str(int(secret_seed)).encode()).hexdigest()


def accepted_range(claimed_ci: list[float], stderr: float, k: float = RERUN_K) -> tuple[float, float]:
    """The interval a re-run mean must lie in: the claimed CI widened by ``k`` standard errors.

    >>> accepted_range([0.2, 0.4], 0.05)
    (0.04999999999999999, 0.55)
    """
    return claimed_ci[0] - k * stderr, claimed_ci[1] + k * stderr


def _check_metadata(meta: Any, bundle: Bundle, what: str) -> list[str]:
    """Why a checkpoint's metadata does not belong to this bundle (empty when it does)."""
    # baselines.checkpoint imports torch: loaded when a re-run is asked for, not with the leaderboard.
    from baselines.checkpoint import SUPPORTED_FORMAT_VERSIONS

    if not isinstance(meta, dict):
        return [f"{what}/checkpoint.json is not a JSON object"]
    env = bundle.manifest["env"]
    model = bundle.manifest["model"]["id"]
    problems = []
    if meta.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        problems.append(
            f"{what}/checkpoint.json has format_version {meta.get('format_version')!r:.40}, expected one of "
            f"{list(SUPPORTED_FORMAT_VERSIONS)}"
        )
    else:
        problems += [f"{what}: {problem}" for problem in check_checkpoint_base(bundle.manifest["model"], meta)]
    if meta.get("algo") not in RERUN_ALGOS:
        problems.append(f"{what} is a {meta.get('algo')!r:.40} checkpoint; a re-run replays {RERUN_ALGOS}")
    if meta.get("env") != env["id"]:
        problems.append(f"{what} was trained on {meta.get('env')!r:.80}, the bundle's env is {env['id']}")
    if meta.get("model") != model:
        problems.append(f"{what} is of model {meta.get('model')!r:.80}, the bundle names {model!r}")
    if isinstance(meta.get("model"), str) and looks_like_local_path(meta["model"]):
        problems.append(f"{what} names a local model path {meta['model']!r:.80}; only model names and hub ids load")
    if not isinstance(meta.get("textgym_version"), str) or not textgym_compatible(meta["textgym_version"]):
        problems.append(f"{what} was written by textgym {meta.get('textgym_version')!r:.40}, which is incompatible")
    kwargs = meta.get("env_kwargs")
    if not isinstance(kwargs, dict) or safejson.nesting_depth(safejson.dumps(kwargs)) > 2:
        problems.append(f"{what}/checkpoint.json env_kwargs is not a flat object")
    elif env["id"] == meta.get("env"):
        try:
            mine = effective_env_kwargs(env["id"], {k: v for k, v in kwargs.items() if k != "split"})
            theirs = effective_env_kwargs(env["id"], {k: v for k, v in env["kwargs"].items() if k != "split"})
        except Exception as error:  # noqa: BLE001
            problems.append(f"{what}/checkpoint.json env_kwargs cannot be read: {error}")
        else:
            differ = sorted(k for k in set(mine) | set(theirs) if k != "render_mode" and mine.get(k) != theirs.get(k))
            if differ:
                problems.append(f"{what} env kwargs differ from the bundle's in {differ}")
    config = meta.get("config")
    fields = {f.name: f.type for f in dataclasses.fields(Args)}
    if not isinstance(config, dict):
        problems.append(f"{what}/checkpoint.json has no config object")
    else:
        kinds = {"int": int, "float": (int, float), "str": str, "bool": bool}
        for name, value in config.items():
            if name not in fields:
                problems.append(f"{what} config has unknown field {name!r:.40}")
            elif not isinstance(value, kinds[fields[name]]) or (fields[name] != "bool" and isinstance(value, bool)):
                problems.append(f"{what} config field {name} has the wrong type: {value!r:.40}")
        if config.get("env") != meta.get("env") or config.get("model") != meta.get("model"):
            problems.append(f"{what} config names another env or model than its metadata")
        if not 1 <= config.get("torch_threads", 1) <= 64 or not 0 <= config.get("lora_r", 0) <= 1024:
            problems.append(f"{what} config has torch_threads or lora_r out of range")
    return problems


def _checkpoint_dir(bundle: Bundle, run: dict[str, Any], report: Report) -> Path | None:
    seed = run["training_seed"]
    if not run.get("checkpoint"):
        report.add("rerun", f"run with training seed {seed} has no checkpoint; --rerun needs every run's checkpoint")
        return None
    try:
        return checkpoint_directory(bundle, run)
    except safejson.UnsafeInputError as error:
        report.add(error.code, str(error))
        return None


def play_run(
    directory: str, env_id: str, split: str, episodes: int, seed: int, deterministic: bool, device: str
) -> dict[str, Any]:
    """Load one run's checkpoint and play ``episodes`` held-out episodes from prompt seed ``seed``.

    Returns:
        The evaluation's result, or ``{"load_error": message}`` when the checkpoint does not load.
    """
    # Loading and playing a checkpoint needs torch and stable-baselines3; the rest of the leaderboard does not.
    from baselines.common.evaluation import evaluate_on_split
    from baselines.common.loading import load_trained

    try:
        model, meta = load_trained(directory, device=device)
    except Exception as error:  # noqa: BLE001 - a checkpoint that does not load is a reason
        return {"load_error": str(error)}
    request = {"episodes": episodes, "seed": seed, "deterministic": deterministic}
    return evaluate_on_split(model, meta["algo"], env_id, meta["env_kwargs"], split, **request)


def rerun_bundle(
    bundle: Bundle,
    report: Report,
    secret_seed: int,
    episodes: int | None = None,
    device: str = "auto",
    ray_address: str | None = None,
) -> None:
    """Re-run every run's checkpoint on held-out prompts and check its claim; results go in ``report``.

    Args:
        bundle: A bundle that passed re-scoring.
        report: Its report; problems (code ``"rerun"``) and ``report.rerun`` are filled in.
        secret_seed: First prompt seed of the held-out set; its episodes must not overlap the track's seeds.
        episodes: Episodes per run (default: the track's).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        ray_address: Play each run as a Ray task on this cluster (``"auto"`` or ``HOST:PORT``;
            the nodes must see the bundle's directory); None plays them here, one after another.
    """
    track = bundle.track
    if track is None:
        report.add("rerun", "the bundle claims no official track")
        return
    episodes = episodes or track.episodes
    if episodes < 2:
        report.add("rerun", f"a re-run needs at least 2 episodes, got {episodes}")
        return
    if not 0 <= secret_seed <= _SEED_LIMIT - episodes:
        report.add("rerun", f"the secret seed must lie in [0, {_SEED_LIMIT - episodes}]")
        return
    if secret_seed < track.prompt_seed_base + track.episodes and track.prompt_seed_base < secret_seed + episodes:
        report.add(
            "rerun",
            f"secret seeds {secret_seed}..{secret_seed + episodes - 1} overlap the track's prompt seeds "
            f"{track.prompt_seed_base}..{track.prompt_seed_base + track.episodes - 1}: choose another secret seed",
        )
        return
    directories = {run["training_seed"]: _checkpoint_dir(bundle, run, report) for run in bundle.manifest["runs"]}
    if None in directories.values():
        return
    for seed, directory in directories.items():
        what = f"checkpoint of training seed {seed}"
        try:
            meta = read_checkpoint_metadata(directory, what)
        except safejson.UnsafeInputError as error:
            report.add(error.code, str(error))
            return
        problems = _check_metadata(meta, bundle, what)
        for message in problems:
            report.add("rerun", message)
    if not report.ok:
        return

    env = bundle.manifest["env"]
    deterministic = bundle.manifest["model"]["decoding"] == "greedy"
    plays = {
        run["training_seed"]: (str(directories[run["training_seed"]]), env["id"], track.split, episodes, secret_seed)
        for run in bundle.manifest["runs"]
    }
    if ray_address:  # each run's episodes as one Ray task of one CPU
        from baselines.cluster import connect  # Ray is an optional extra; the leaderboard loads no torch without it

        connect(ray_address)
        import ray

        task = ray.remote(num_cpus=1)(play_run)
        refs = {seed: task.remote(*play, deterministic, device) for seed, play in plays.items()}
        played = {seed: ray.get(ref) for seed, ref in refs.items()}
    else:
        played = {seed: play_run(*play, deterministic, device) for seed, play in plays.items()}
    results = []
    for run in bundle.manifest["runs"]:
        seed = run["training_seed"]
        result = played[seed]
        if "load_error" in result:
            report.add("rerun", f"checkpoint of training seed {seed} could not be loaded: {result['load_error']}")
            continue
        stderr = standard_error(result["rewards"])
        low, high = accepted_range(run["claimed"]["ci95"], stderr)
        mean = result["reward_mean"]
        results.append({"training_seed": seed, "mean_reward": mean, "stderr": stderr, "accepted_range": [low, high]})
        if not low <= mean <= high:
            report.add(
                "rerun",
                f"run with training seed {seed}: its checkpoint scores {mean:.4f} (standard error {stderr:.4f}) on "
                f"{episodes} held-out prompts, outside the claimed 95% CI {run['claimed']['ci95'][0]:.4f}.."
                f"{run['claimed']['ci95'][1]:.4f} widened by {RERUN_K:g} standard errors ({low:.4f}..{high:.4f}): "
                "the claimed generations do not represent this policy",
            )
    summary = "; ".join(
        f"seed {r['training_seed']}: {r['mean_reward']:.4f} in "
        f"{r['accepted_range'][0]:.4f}..{r['accepted_range'][1]:.4f}"
        for r in results
    )
    report.rerun = {
        "k": RERUN_K,
        "episodes": episodes,
        "secret_seed_sha256": seed_commitment(secret_seed),
        "runs": results,
        "summary": summary,
    }
