"""RayVecEnv, baselines.cluster, the training CLI's Ray flags and the quick track on a fake two-node Ray cluster.

Everything binds 127.0.0.1; one cluster serves the whole module (it takes seconds to start).
"""

import os

# tests/conftest.py sets it for the whole session (ray may be imported by another module first).
assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0", "every Ray node must bind 127.0.0.1"

import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from engine_check import require_engine  # noqa: E402

require_engine("ray")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from sb3_contrib import MaskablePPO  # noqa: E402
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported  # noqa: E402
from stable_baselines3 import DQN, PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402
from tiny_runs import TINY_RUN  # noqa: E402

from baselines.cluster import cluster_summary, connect, import_ray, run_task  # noqa: E402
from baselines.vec_env import RayEnvError, RayVecEnv  # noqa: E402

CANDIDATES = "TextGym/DialogueCandidate-v0"  # three turns with the tiny model: an episode ends at the third step
KWARGS = {"model": "tiny", "render_mode": None}


@pytest.fixture(scope="module")
def cluster(tiny_model):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def wait_for_free_cpus(cpus: float, timeout: float = 20.0) -> None:
    """Killed actors give their CPUs back asynchronously."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0.0) < cpus:
        assert time.monotonic() < deadline, f"CPUs still held: {ray.available_resources()}"
        time.sleep(0.2)


def assert_same(mine, theirs, where="infos"):
    """Equal nested infos/observations; Monitor's wall-clock episode time is the only field allowed to differ."""
    if isinstance(theirs, dict):
        assert set(mine) == set(theirs), where
        for key in theirs:
            if not (key == "t" and where.endswith("episode")):
                assert_same(mine[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, (list, tuple)):
        assert len(mine) == len(theirs), where
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, np.ndarray):
        np.testing.assert_array_equal(mine, theirs, err_msg=where)
    else:
        assert mine == theirs, where


def cartpoles(n, wrapper=None):
    def factory():
        env = gym.make("CartPole-v1")
        return wrapper(env) if wrapper else env

    return [factory] * n


def test_matches_dummy_vec_env_across_two_nodes(cluster):
    ray_env = make_vec_env(CANDIDATES, 4, seed=3, env_kwargs=KWARGS, vec_env_cls=RayVecEnv)
    local = make_vec_env(CANDIDATES, 4, seed=3, env_kwargs=KWARGS, vec_env_cls=DummyVecEnv)
    try:
        assert ray_env.groups == [[0, 1], [2, 3]]  # one actor per CPU of the cluster, two envs each
        assert len(set(ray_env.node_ids())) == 2
        assert_same(ray_env.reset(), local.reset(), "reset")
        assert_same(ray_env.reset_infos, local.reset_infos, "reset_infos")
        assert_same(ray_env.action_masks(), np.stack(local.env_method("action_masks")), "masks")
        dones_seen = terminal_seen = 0
        for step in range(5):
            actions = np.array([step % 4, 3, 1, (step + 2) % 4])
            mine, theirs = ray_env.step(actions), local.step(actions)
            assert_same(list(mine), list(theirs), f"step {step}")
            assert_same(ray_env.reset_infos, local.reset_infos, f"step {step} reset_infos")
            dones_seen += int(theirs[2].sum())
            terminal_seen += sum("terminal_observation" in info for info in mine[3])
            assert all("messages" in info for info in mine[3])  # the transcripts travel back
        assert dones_seen >= 4 and terminal_seen == dones_seen  # every env finished an episode and was auto-reset
        assert ray_env.get_attr("num_candidates", indices=[3, 0]) == [4, 4]
        ray_env.set_attr("candidate_note", "x", indices=[2])
        assert ray_env.get_attr("candidate_note", indices=[2]) == ["x"]
        with pytest.raises(AttributeError):
            ray_env.get_attr("candidate_note", indices=[1])
        assert ray_env.env_is_wrapped(Monitor) == [True] * 4
        ray_env.seed(11)
        local.seed(11)
        assert_same(ray_env.reset(), local.reset(), "reseeded reset")
        with pytest.raises(ValueError, match=r"actions of shape \(3,\), expected \(4,\)"):
            ray_env.step(np.zeros(3, dtype=np.int64))
    finally:
        ray_env.close()
        local.close()
    with pytest.raises(RayEnvError, match="closed"):
        ray_env.reset()
    wait_for_free_cpus(2)


def test_stock_dqn_ppo_and_maskable_ppo_learn_on_it(cluster):
    env = make_vec_env(CANDIDATES, 4, seed=0, env_kwargs=KWARGS, vec_env_cls=RayVecEnv)
    try:
        assert is_masking_supported(env)  # sb3-contrib finds the candidate envs' action_masks through the actors
        env.reset()
        np.testing.assert_array_equal(get_action_masks(env), env.action_masks())
        for algorithm in (
            DQN("MultiInputPolicy", env, learning_starts=4, train_freq=1, batch_size=4, buffer_size=64, seed=0),
            PPO("MultiInputPolicy", env, n_steps=2, batch_size=4, n_epochs=1, seed=0),
            MaskablePPO("MultiInputPolicy", env, n_steps=2, batch_size=4, n_epochs=1, seed=0),
        ):
            before = [p.detach().clone() for p in algorithm.policy.parameters()]
            algorithm.learn(16)
            assert algorithm.num_timesteps == 16  # 4 envs x 4 steps
            after = list(algorithm.policy.parameters())
            assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), type(algorithm).__name__
    finally:
        env.close()
    wait_for_free_cpus(2)


def test_bad_input_gives_clear_errors_and_leaves_no_actors(cluster, monkeypatch):
    # An env that fails to build inside its actor: its id and kwargs reach the driver; the actors are gone.
    bad = {**KWARGS, "no_such_option": 7}
    with pytest.raises(RayEnvError, match=r"env 0 failed to build .*TextGym/SentimentCandidate-v0.*no_such_option"):
        make_vec_env("TextGym/SentimentCandidate-v0", 4, env_kwargs=bad, vec_env_cls=RayVecEnv)
    wait_for_free_cpus(2)

    # More workers than the cluster's CPUs: refused before any actor starts.
    def no_actors(self, slots):
        raise AssertionError("an actor was started")

    with monkeypatch.context() as patch:
        patch.setattr(RayVecEnv, "_start", no_actors)
        with pytest.raises(ValueError, match=r"3 workers x 1 CPUs need 3 CPUs but the Ray cluster has 2"):
            RayVecEnv(cartpoles(4), num_workers=3)
        with pytest.raises(ValueError, match="num_workers must be between 1 and the number of envs \\(2\\), got 5"):
            RayVecEnv(cartpoles(2), num_workers=5)

    # An address nobody answers: a prompt ConnectionError, never a hang.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        connect(f"127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="'nonsense' is not 'auto' or HOST:PORT"):
        connect("nonsense")
    with pytest.raises(ValueError, match="a task of 3 CPUs cannot run on a Ray cluster of 2 CPUs"):
        run_task(len, [], address=cluster.address, num_cpus=3)

    # Ray not installed: the error names the extra to install.
    real_version = importlib.metadata.version

    def version(name):
        if name == "ray":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(ImportError, match=r"pip install 'textgym\[ray\]'"):
        import_ray()


def test_cluster_summary_names_both_nodes(cluster):
    summary = connect(cluster.address)  # already connected: the same cluster
    assert summary == cluster_summary()
    assert summary["nodes"] == 2 and summary["cpus"] == 2.0 and summary["gpus"] == 0.0
    assert len(summary["node_ids"]) == 2 and summary["address"] == cluster.address


def test_train_cli_runs_its_envs_on_the_cluster(cluster, tmp_path):
    out = tmp_path / "run"
    args = [*TINY_RUN, "--total-timesteps", "16", "--seed", "3", "--eval-episodes", "1", "--out", str(out)]
    command = [sys.executable, "-m", "baselines.train", *args, "--ray-address", cluster.address, "--env-workers", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 16
    assert summary["cluster"]["nodes"] == 2 and summary["cluster"]["address"] == cluster.address
    assert summary["config"]["env_workers"] == 2
    # More env workers than the cluster's CPUs: a clear error before any actor starts.
    command[command.index("--env-workers") + 1] = "3"
    command[command.index("--out") + 1] = str(tmp_path / "refused")
    refused = subprocess.run([*command, "--n-envs", "4"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "3 workers x 1 CPUs need 3 CPUs but the Ray cluster has 2" in refused.stderr
    wait_for_free_cpus(2)


def test_step_timeout_names_the_hung_envs(cluster):
    class Sleepy(gym.Wrapper):
        sleep_s = 0.0

        def step(self, action):
            time.sleep(self.sleep_s)
            return self.env.step(action)

    env = RayVecEnv(cartpoles(4, Sleepy), num_workers=2, step_timeout=2)
    env.reset()
    env.set_attr("sleep_s", 60.0, indices=[3])
    start = time.monotonic()
    with pytest.raises(RayEnvError, match=r"envs \[2, 3\] \(actor 1 on node \w+ at 127.0.0.1\) did not answer step"):
        env.step(np.zeros(4, dtype=np.int64))
    assert time.monotonic() - start < 10
    assert env.closed
    wait_for_free_cpus(2)


def test_lost_node_restarts_its_envs_or_fails_clearly(cluster):
    # Half a CPU per actor, so the head node can host the rebuilt actor after the other node goes.
    env = RayVecEnv(cartpoles(4), num_workers=2, cpus_per_worker=0.5, max_restarts=1)
    env.seed(5)
    env.reset()
    nodes = env.node_ids()
    assert len(set(nodes)) == 2
    worker = next(node for node in cluster.list_all_nodes() if node.node_id != cluster.head_node.node_id)
    lost = [i for slot, group in enumerate(env.groups) for i in group if nodes[slot] == worker.node_id]
    cluster.remove_node(worker)
    obs, rewards, dones, infos = env.step(np.zeros(4, dtype=np.int64))
    for i in range(4):
        assert infos[i].get("ray_restarted", False) == (i in lost)
    assert dones[lost].all() and (rewards[lost] == 0).all()
    assert all("terminal_observation" in infos[i] and infos[i]["TimeLimit.truncated"] for i in lost)
    assert env.restarts == [int(nodes[s] == worker.node_id) for s in range(2)]
    slot = env.restarts.index(1)
    for i, seed in zip(env.groups[slot], env._restart_seeds(slot), strict=True):  # rebuilt envs reseeded as documented
        assert seed == int(np.random.SeedSequence([5, i, 1]).generate_state(1)[0])
        np.testing.assert_array_equal(obs[i], gym.make("CartPole-v1").reset(seed=seed)[0])
    assert set(env.node_ids()) == {cluster.head_node.node_id}
    for _ in range(3):  # training goes on
        assert not any(info.get("ray_restarted") for info in env.step(np.ones(4, dtype=np.int64))[3])
    env.close()

    # Without restarts, losing a node is a clear error naming the envs and the node.
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    env = RayVecEnv(cartpoles(2), num_workers=2, step_timeout=30)
    env.reset()
    worker = next(node for node in cluster.list_all_nodes() if node.node_id != cluster.head_node.node_id)
    slot = env.node_ids().index(worker.node_id)
    cluster.remove_node(worker)
    start = time.monotonic()
    with pytest.raises(RayEnvError, match=rf"envs \[{slot}\] \(actor {slot} on node {worker.node_id} .*died"):
        env.step(np.zeros(2, dtype=np.int64))
    assert time.monotonic() - start < 30 and env.closed
    cluster.add_node(num_cpus=1)  # the later tests find two nodes again
    cluster.wait_for_nodes()
    wait_for_free_cpus(2)


def test_quick_track_jobs_as_ray_tasks_keep_followers_after_their_job(cluster, quick_track, tmp_path):
    def job(name, code, followers=()):
        order = f"open({str(tmp_path / 'order')!r}, 'a').write({name!r} + ' ')"
        return quick_track.Job(name, [sys.executable, "-c", f"{order}; raise SystemExit({code})"], list(followers))

    jobs = [job("a", 0, [job("a1", 0), job("a2", 0)]), job("b", 3, [job("b1", 0)]), job("c", 0)]
    results = {r["job"]: r["exit_code"] for r in quick_track.run_jobs_on_ray(jobs, tmp_path, cluster.address)}
    assert results == {"a": 0, "a1": 0, "a2": 0, "b": 3, "b1": -1, "c": 0}
    order = (tmp_path / "order").read_text().split()
    assert sorted(order) == ["a", "a1", "a2", "b", "c"] and order.index("a") < min(order.index("a1"), order.index("a2"))
    wait_for_free_cpus(2)


def test_quick_track_on_ray_makes_the_same_bundles_as_locally(cluster, quick_track, tmp_path):
    bundles = {}
    for where in ("local", "ray"):
        out = tmp_path / where
        (out / "logs").mkdir(parents=True)
        argv = ["--out", str(out), "--model", "tiny", "--tasks", "Sentiment", "--seeds", "0"]
        args = quick_track.parse_args(argv + (["--ray-address", cluster.address] if where == "ray" else []))
        jobs = [job for job in quick_track.track_jobs(args, out) if job.name.startswith("random__")]
        assert len(jobs) == 2  # the random arms of Sentiment-v0 and SentimentCandidate-v0: deterministic
        if where == "ray":
            results = quick_track.run_jobs_on_ray(jobs, out / "logs", args.ray_address)
            assert all(r["exit_code"] == 0 for r in results), results
        else:  # what each job's subprocess runs, here in this process
            for env_id in ("TextGym/Sentiment-v0", "TextGym/SentimentCandidate-v0"):
                quick_track.random_arm(env_id, out / "random" / quick_track.slug(env_id), "tiny", [0])
        rows = [row for row in quick_track.make_bundles(out, ["Sentiment"], [0], "tiny") if row["arm"] == "random"]
        bundles[where] = {
            row["bundle"]: (
                row["claimed"],
                json.loads((out / "bundles" / row["bundle"] / "bundle.json").read_text())["runs"],
                (out / "bundles" / row["bundle"] / "generations.jsonl").read_bytes(),
            )
            for row in rows
        }
    assert len(bundles["local"]) == 2 and bundles["ray"] == bundles["local"]
    wait_for_free_cpus(2)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, tiny_model):
    """Three untrained (perturbed) tiny PPO runs with their checkpoints and evaluations."""
    from test_leaderboard import make_run_dir

    root = tmp_path_factory.mktemp("runs")
    return [make_run_dir(root, seed) for seed in range(3)]


def test_evaluate_cli_as_a_ray_task_gives_the_local_result(cluster, run_dirs, tmp_path, capsys):
    from baselines.evaluate import main as evaluate_main

    printed, records = {}, {}
    for where, extra in (("local", []), ("ray", ["--ray-address", cluster.address])):
        out = tmp_path / f"{where}.jsonl"
        argv = ["--checkpoint", str(run_dirs[0] / "checkpoint"), "--episodes", "2", "--device", "cpu"]
        assert evaluate_main([*argv, "--out", str(out), *extra]) == 0
        printed[where] = json.loads(capsys.readouterr().out)
        records[where] = out.read_text().splitlines()
    assert printed["ray"] == printed["local"] and printed["local"]["episodes"] == 2
    assert records["ray"] == records["local"] and len(records["local"]) == 2
    wait_for_free_cpus(2)


def test_leaderboard_rerun_as_ray_tasks_gives_the_local_result(cluster, run_dirs, tmp_path, capsys):
    from leaderboard.cli import main as leaderboard_main
    from leaderboard.rerun import rerun_bundle
    from leaderboard.verify import verify_bundle

    bundle = tmp_path / "bundle"
    assert leaderboard_main(["bundle", *map(str, run_dirs), "--out", str(bundle), "--hardware", "test CPU"]) == 0
    reruns = {}
    for address in (None, cluster.address):
        report = verify_bundle(bundle)
        rerun_bundle(report.bundle, report, 60_000, episodes=4, device="cpu", ray_address=address)
        assert report.ok, report.summary()
        reruns[address] = report.rerun
    assert reruns[cluster.address] == reruns[None] and len(reruns[None]["runs"]) == 3
    code = leaderboard_main(["verify", str(bundle), "--rerun", "--secret-seed", "60000", "--rerun-episodes", "4",
                             "--device", "cpu", "--ray-address", cluster.address])  # fmt: skip
    assert code == 0 and reruns[None]["summary"] in capsys.readouterr().out
    wait_for_free_cpus(2)
