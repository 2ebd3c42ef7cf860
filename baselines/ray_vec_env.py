"""An SB3 vector env whose sub-envs live in Ray actors, spread over a cluster's nodes.

Built like SB3's ``SubprocVecEnv`` from a list of env factories: the factories are split
into contiguous groups, one group per actor, and each actor steps its group as one
:class:`baselines.proposal_vec_env.BatchedProposalVecEnv`, so the candidate-level envs of an actor
share one batched LM proposal per step. Observations, rewards, dones, infos, auto-reset and
``terminal_observation`` are those of ``DummyVecEnv`` over the same factories.

A step never hangs on a dead actor or node: after ``step_timeout`` seconds (or as soon as
Ray reports the actor dead) the step fails with :class:`RayEnvError` naming the lost envs
and their node. With ``max_restarts`` the lost actor is rebuilt from the same factories
instead, its envs are reset with deterministic seeds, and the step reports those envs as
done with ``info["ray_restarted"] = True``, so training goes on.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from baselines.cluster import connect, import_ray
from baselines.proposal_vec_env import BatchedProposalVecEnv
from textgym.checks import check_integer

#: What a rebuilt env's step reports in its info (its episode ended without a transition of its own).
RESTARTED_KEY = "ray_restarted"


class RayEnvError(RuntimeError):
    """Envs of a :class:`RayVecEnv` failed to build, died, timed out or raised in their actor."""


def describe_factory(factory: Callable[[], gym.Env]) -> str:
    """A readable name for an env factory: its repr, or a function's name and the simple values it closes over.

    SB3's ``make_vec_env`` factories close over ``env_id`` and ``env_kwargs``, so an error
    naming the factory names the env id and its arguments.
    """
    if not inspect.isfunction(factory):
        return repr(factory)
    simple = (str, int, float, bool, dict, type(None))
    values = inspect.getclosurevars(factory).nonlocals
    shown = ", ".join(f"{name}={value!r:.200}" for name, value in values.items() if isinstance(value, simple))
    return f"{factory.__qualname__}({shown})"


class EnvWorker:
    """The body of a :class:`RayVecEnv` actor: a group of envs stepped as one ``BatchedProposalVecEnv``.

    Args:
        env_fns: The group's env factories.
        first_index: The index of the group's first env in the whole vector env.
        proposal_variants: As :class:`BatchedProposalVecEnv` (each actor keeps its own sets).
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], first_index: int, proposal_variants: int = 0) -> None:
        self.env_fns, self.first_index, self.venv = env_fns, first_index, None
        self.proposal_variants = proposal_variants

    def build(self) -> dict[str, Any]:
        """Make the envs; return their spaces and where this actor runs.

        Raises:
            RayEnvError: A factory failed; the message names the env index and the factory.
        """
        import ray

        envs = []
        for offset, factory in enumerate(self.env_fns):
            try:
                envs.append(factory())
            except Exception as error:
                for env in envs:
                    env.close()
                raise RayEnvError(
                    f"env {self.first_index + offset} failed to build from {describe_factory(factory)}: "
                    f"{type(error).__name__}: {error}"
                ) from error
        self.venv = BatchedProposalVecEnv([lambda env=env: env for env in envs], self.proposal_variants)
        return {
            "observation_space": self.venv.observation_space,
            "action_space": self.venv.action_space,
            "render_mode": self.venv.render_mode,
            "node_id": ray.get_runtime_context().get_node_id(),
            "address": ray.util.get_node_ip_address(),
        }

    def reset(self, seeds: list[int | None], options: list[dict]) -> tuple[VecEnvObs, list[dict]]:
        """Reset every env with its seed and options (SB3's pending ``_seeds`` and ``_options``)."""
        self.venv._seeds, self.venv._options = list(seeds), list(options)
        obs = self.venv.reset()
        return obs, list(self.venv.reset_infos)

    def step(self, actions: np.ndarray) -> tuple[VecEnvObs, np.ndarray, np.ndarray, list[dict], list[dict]]:
        """Step every env (auto-resetting finished ones, as ``DummyVecEnv``)."""
        obs, rewards, dones, infos = self.venv.step(actions)
        return obs, rewards, dones, infos, list(self.venv.reset_infos)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a method of the inner vec env (``env_method``, ``get_attr``, ``set_attr``, ``env_is_wrapped``...)."""
        return getattr(self.venv, method)(*args, **kwargs)

    def close(self) -> None:
        """Close the envs."""
        if self.venv is not None:
            self.venv.close()


def _concat(parts: Sequence[Any]) -> Any:
    """Join the actors' observation batches along the env axis (arrays, dicts or tuples of arrays)."""
    first = parts[0]
    if isinstance(first, dict):
        return type(first)((key, np.concatenate([part[key] for part in parts])) for key in first)
    if isinstance(first, tuple):
        return tuple(np.concatenate([part[i] for part in parts]) for i in range(len(first)))
    return np.concatenate(parts)


def _rows(obs: Any, index: int) -> Any:
    """The observation of one env from a batch."""
    if isinstance(obs, dict):
        return type(obs)((key, value[index].copy()) for key, value in obs.items())
    if isinstance(obs, tuple):
        return tuple(value[index].copy() for value in obs)
    return obs[index].copy()


class RayVecEnv(VecEnv):
    """A stable-baselines3 ``VecEnv`` whose envs run in Ray actors, a few envs per actor.

    Use it like ``SubprocVecEnv``: ``RayVecEnv([make_env(i) for i in range(8)], num_workers=4)``
    or ``make_vec_env(env_id, 8, vec_env_cls=RayVecEnv, vec_env_kwargs={"num_workers": 4})``.
    Ray must be connected (:func:`baselines.cluster.connect`); otherwise a local Ray instance is started.

    Args:
        env_fns: Env factories; Ray serialises them (closures included) to the actors.
        num_workers: Actors (default: one per ``cpus_per_worker`` CPUs of the cluster, at most one per env).
        envs_per_worker: Envs per actor instead of ``num_workers`` (the last actor may get fewer).
        cpus_per_worker: CPUs Ray reserves for each actor.
        scheduling_strategy: Ray's scheduling strategy of the actors; ``"SPREAD"`` puts them on
            as many nodes as possible.
        step_timeout: Seconds a step, reset or env call may take before its actor counts as lost.
        start_timeout: Seconds an actor may take to be placed and build its envs.
        max_restarts: Times each actor is rebuilt after being lost (0: a lost actor is an error).
        proposal_variants: As :class:`BatchedProposalVecEnv`: candidate sets each actor keeps
            per context for reuse (0: none).

    Raises:
        ValueError: Bad sizes, or the cluster has fewer CPUs than the workers need (before any actor starts).
        RayEnvError: An env failed to build (the actors are shut down first).
        ImportError: Ray is not installed.
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        num_workers: int | None = None,
        envs_per_worker: int | None = None,
        cpus_per_worker: float = 1.0,
        scheduling_strategy: str = "SPREAD",
        step_timeout: float = 600.0,
        start_timeout: float = 600.0,
        max_restarts: int = 0,
        proposal_variants: int = 0,
    ) -> None:
        proposal_variants = check_integer(proposal_variants, "proposal_variants", minimum=0)
        if "ray" not in sys.modules or not sys.modules["ray"].is_initialized():
            connect(None)
        ray = import_ray()
        n_envs = len(env_fns)
        if n_envs == 0:
            raise ValueError("RayVecEnv needs at least one env factory, got none")
        if cpus_per_worker <= 0 or step_timeout <= 0 or start_timeout <= 0 or max_restarts < 0:
            raise ValueError(
                f"RayVecEnv: cpus_per_worker={cpus_per_worker}, step_timeout={step_timeout} and "
                f"start_timeout={start_timeout} must be > 0 and max_restarts={max_restarts} >= 0"
            )
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
        if num_workers is not None and envs_per_worker is not None:
            raise ValueError(f"pass num_workers ({num_workers}) or envs_per_worker ({envs_per_worker}), not both")
        if envs_per_worker is not None:
            if envs_per_worker < 1:
                raise ValueError(f"envs_per_worker must be >= 1, got {envs_per_worker}")
            num_workers = -(-n_envs // envs_per_worker)
        elif num_workers is None:
            num_workers = max(1, min(n_envs, int(cluster_cpus // cpus_per_worker)))
        if not 1 <= num_workers <= n_envs:
            raise ValueError(f"num_workers must be between 1 and the number of envs ({n_envs}), got {num_workers}")
        if num_workers * cpus_per_worker > cluster_cpus:
            raise ValueError(
                f"RayVecEnv: {num_workers} workers x {cpus_per_worker:g} CPUs need {num_workers * cpus_per_worker:g} "
                f"CPUs but the Ray cluster has {cluster_cpus:g}; use fewer workers (--env-workers) or add nodes"
            )
        self.ray = ray
        self.env_fns = list(env_fns)
        self.groups = [[int(i) for i in group] for group in np.array_split(np.arange(n_envs), num_workers)]
        self.cpus_per_worker, self.scheduling_strategy = cpus_per_worker, scheduling_strategy
        self.step_timeout, self.start_timeout, self.max_restarts = step_timeout, start_timeout, max_restarts
        self.restarts = [0] * num_workers
        self.proposal_variants = proposal_variants
        self.actors: list[Any] = [None] * num_workers
        self.placement: list[dict[str, Any]] = [{} for _ in range(num_workers)]
        self.closed = False
        self._seed_base = 0
        self._refs: dict[int, Any] = {}
        self._last_obs: VecEnvObs | None = None
        try:
            built = self._start(range(num_workers))
        except BaseException:
            self.close()
            raise
        first = built[0]
        self.render_mode = first["render_mode"]
        super().__init__(n_envs, first["observation_space"], first["action_space"])

    # -- actors ----------------------------------------------------------------------------

    def _start(self, slots: Sequence[int]) -> list[dict[str, Any]]:
        """Create the actors of ``slots`` and build their envs; return what each build reported."""
        worker = self.ray.remote(EnvWorker)
        for slot in slots:
            group = self.groups[slot]
            self.actors[slot] = worker.options(
                num_cpus=self.cpus_per_worker, scheduling_strategy=self.scheduling_strategy
            ).remote([self.env_fns[i] for i in group], group[0], self.proposal_variants)
        refs = {slot: self.actors[slot].build.remote() for slot in slots}
        ready, _ = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.start_timeout)
        built = []
        for slot, ref in refs.items():
            if ref not in ready:
                raise RayEnvError(
                    f"RayVecEnv: envs {self.groups[slot]} were not built within start_timeout={self.start_timeout} s "
                    f"(no node with {self.cpus_per_worker:g} free CPUs, or a slow env); see `ray status`"
                )
            try:
                info = self.ray.get(ref)
            except self.ray.exceptions.RayError as error:
                cause = error.cause if isinstance(error, self.ray.exceptions.RayTaskError) else error
                raise RayEnvError(
                    f"RayVecEnv: envs {self.groups[slot]} failed to build in their actor: {cause}"
                ) from None
            self.placement[slot] = {"node_id": info["node_id"], "address": info["address"], "envs": self.groups[slot]}
            built.append(info)
        return built

    def _where(self, slot: int) -> str:
        place = self.placement[slot]
        return f"envs {self.groups[slot]} (actor {slot} on node {place.get('node_id')} at {place.get('address')})"

    def _gather(self, refs: dict[int, Any], what: str, fatal: bool = True) -> tuple[dict[int, Any], dict[int, str]]:
        """Wait up to ``step_timeout`` for the actors' answers; return the answers and the lost actors' reasons.

        Raises:
            RayEnvError: With ``fatal``, an env raised inside its actor: the envs' state is unknown, so
                all actors are shut down first. Without it, the env's own exception is raised.
        """
        ready, _ = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.step_timeout)
        answers, lost = {}, {}
        for slot, ref in refs.items():
            if ref not in ready:
                lost[slot] = f"did not answer {what} within step_timeout={self.step_timeout} s"
                continue
            try:
                answers[slot] = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as error:
                lost[slot] = f"died during {what}: {str(error).splitlines()[-1].strip() or type(error).__name__}"
            except self.ray.exceptions.RayTaskError as error:
                if not fatal:
                    raise
                self.close()
                raise RayEnvError(f"RayVecEnv: {what} raised in {self._where(slot)}: {error.cause!r}") from error
        return answers, lost

    def _replace(self, lost: dict[int, str]) -> None:
        """Rebuild the lost actors, or shut everything down and raise when their restarts are spent."""
        spent = {slot: reason for slot, reason in lost.items() if self.restarts[slot] >= self.max_restarts}
        if spent:
            self._shutdown(lost=lost)
            details = "; ".join(f"{self._where(slot)} {reason}" for slot, reason in spent.items())
            raise RayEnvError(
                f"RayVecEnv lost {details} (max_restarts={self.max_restarts}; pass max_restarts > 0 to rebuild "
                f"lost envs and go on)"
            )
        for slot in lost:
            self.ray.kill(self.actors[slot], no_restart=True)
            self.restarts[slot] += 1
        try:
            self._start(list(lost))
        except BaseException:
            self.close()
            raise

    def _restart_seeds(self, slot: int) -> list[int]:
        """Deterministic seeds of a rebuilt actor's envs: from the vec env's seed, the env index and the restart."""
        seeds = [np.random.SeedSequence([self._seed_base, i, self.restarts[slot]]) for i in self.groups[slot]]
        return [int(seed.generate_state(1)[0]) for seed in seeds]

    # -- VecEnv ----------------------------------------------------------------------------

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        """Seed the next reset (env ``i`` gets ``seed + i``); also the base of rebuilt envs' seeds."""
        seeds = super().seed(seed)
        self._seed_base = int(self._seeds[0]) if self._seeds[0] is not None else 0
        return seeds

    def reset(self) -> VecEnvObs:
        """Reset every env with its pending seed and options (as ``DummyVecEnv``); rebuild lost actors if allowed."""
        self._check_open()
        pending = dict(enumerate(self.groups))
        answers: dict[int, Any] = {}
        while pending:
            refs = {
                slot: self.actors[slot].reset.remote([self._seeds[i] for i in group], [self._options[i] for i in group])
                for slot, group in pending.items()
            }
            got, lost = self._gather(refs, "reset")
            answers.update(got)
            if lost:
                self._replace(lost)
            pending = {slot: self.groups[slot] for slot in lost}
        obs = _concat([answers[slot][0] for slot in range(len(self.groups))])
        self.reset_infos = [info for slot in range(len(self.groups)) for info in answers[slot][1]]
        self._reset_seeds()
        self._reset_options()
        self._last_obs = obs
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Check the action batch's shape and send each actor its envs' actions.

        Raises:
            ValueError: ``actions`` is not one action per env of the action space's shape.
        """
        self._check_open()
        actions = np.asarray(actions)
        expected = (self.num_envs, *self.action_space.shape)
        if actions.shape != expected:
            raise ValueError(
                f"RayVecEnv.step: actions of shape {actions.shape}, expected {expected} "
                f"({self.num_envs} envs x action shape {self.action_space.shape})"
            )
        self._refs = {slot: self.actors[slot].step.remote(actions[group]) for slot, group in enumerate(self.groups)}

    def step_wait(self) -> VecEnvStepReturn:
        """Collect the actors' steps; envs of rebuilt actors report ``done`` with ``info["ray_restarted"]``."""
        answers, lost = self._gather(self._refs, "step")
        if lost:
            self._replace(lost)
            refs = {
                slot: self.actors[slot].reset.remote(self._restart_seeds(slot), [{}] * len(self.groups[slot]))
                for slot in lost
            }
            restarted, still_lost = self._gather(refs, "reset after a restart")
            if still_lost:
                self.close()
                raise RayEnvError(f"RayVecEnv: rebuilt {self._where(next(iter(still_lost)))} was lost again at once")
            for slot, (obs, reset_infos) in restarted.items():
                size = len(self.groups[slot])
                infos = [
                    {
                        RESTARTED_KEY: True,
                        "terminal_observation": _rows(self._last_obs, index),
                        "TimeLimit.truncated": True,
                    }
                    for index in self.groups[slot]
                ]
                answers[slot] = (obs, np.zeros(size, dtype=np.float32), np.ones(size, dtype=bool), infos, reset_infos)
        parts = [answers[slot] for slot in range(len(self.groups))]
        obs = _concat([part[0] for part in parts])
        rewards = np.concatenate([part[1] for part in parts]).astype(np.float32)
        dones = np.concatenate([part[2] for part in parts]).astype(bool)
        infos = [info for part in parts for info in part[3]]
        self.reset_infos = [info for part in parts for info in part[4]]
        self._last_obs = obs
        return obs, rewards, dones, infos

    def _route(self, indices: VecEnvIndices) -> dict[int, list[int]]:
        """Map global env indices to ``{actor slot: local indices}``."""
        wanted = self._get_indices(indices)
        routes: dict[int, list[int]] = {}
        for index in wanted:
            slot = next(s for s, group in enumerate(self.groups) if index in group)
            routes.setdefault(slot, []).append(index - self.groups[slot][0])
        return routes

    def _call(self, method: str, indices: VecEnvIndices, *args: Any, **kwargs: Any) -> list[Any]:
        """Run the inner vec envs' ``method`` on ``indices``; results in the order of ``indices``."""
        self._check_open()
        routes = self._route(indices)
        refs = {
            slot: self.actors[slot].call.remote(method, *args, indices=local, **kwargs)
            for slot, local in routes.items()
        }
        answers, lost = self._gather(refs, method, fatal=False)
        if lost:
            self._replace(lost)
            raise RayEnvError(f"RayVecEnv: {method} lost {', '.join(self._where(s) for s in lost)}; they were rebuilt")
        by_index = {
            self.groups[slot][0] + local: value
            for slot, local_indices in routes.items()
            for local, value in zip(local_indices, answers[slot] or [None] * len(local_indices), strict=True)
        }
        return [by_index[index] for index in self._get_indices(indices)]

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call ``method_name`` of the envs at ``indices`` (through their wrappers) and return the results."""
        return self._call("env_method", indices, method_name, *method_args, **method_kwargs)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute ``attr_name`` of the envs at ``indices``."""
        return self._call("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` to ``value`` in the envs at ``indices``."""
        self._call("set_attr", indices, attr_name, value)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether the envs at ``indices`` are wrapped in ``wrapper_class``."""
        return self._call("env_is_wrapped", indices, wrapper_class)

    def has_attr(self, attr_name: str) -> bool:
        """Whether the envs have ``attr_name`` (asked of the first env, without sending the value back)."""
        self._check_open()
        answers, lost = self._gather({0: self.actors[0].call.remote("has_attr", attr_name)}, "has_attr", fatal=False)
        if lost:
            self._replace(lost)
            return self.has_attr(attr_name)
        return bool(answers[0])

    def action_masks(self) -> np.ndarray:
        """Each env's ``action_masks()`` as one ``(num_envs, n_actions)`` array, for sb3-contrib's ``MaskablePPO``."""
        return np.stack(self.env_method("action_masks"))

    def node_ids(self) -> list[str]:
        """The Ray node id of each actor (the same node may appear several times)."""
        return [place["node_id"] for place in self.placement]

    def _check_open(self) -> None:
        if self.closed:
            raise RayEnvError("RayVecEnv is closed (after close() or an unrecoverable actor failure)")

    def close(self) -> None:
        """Close the envs and kill every actor (idempotent)."""
        self._shutdown()

    def _shutdown(self, lost: Sequence[int] = ()) -> None:
        """Close the envs of the actors not ``lost`` (a hung actor would never answer), then kill every actor."""
        if self.closed:
            return
        self.closed = True
        alive = [actor for slot, actor in enumerate(self.actors) if actor is not None and slot not in lost]
        for slot in lost:
            self.ray.kill(self.actors[slot], no_restart=True)
        closing = [actor.close.remote() for actor in alive]
        if closing:
            self.ray.wait(closing, num_returns=len(closing), timeout=10)
        for actor in alive:
            self.ray.kill(actor, no_restart=True)


def make_ray_vec_env(
    env_id: str,
    n_envs: int,
    seed: int,
    env_kwargs: dict[str, Any],
    address: str | None,
    workers: int | None = None,
    wrapper_class: Callable[..., gym.Env] | None = None,
    wrapper_kwargs: dict[str, Any] | None = None,
    **vec_env_kwargs: Any,
) -> RayVecEnv:
    """SB3's ``make_vec_env`` over a :class:`RayVecEnv`: connect, then build ``n_envs`` envs in ``workers`` actors.

    Args:
        env_id: A registered env id.
        n_envs: Number of envs.
        seed: Env ``i`` is reset with ``seed + i`` first.
        env_kwargs: ``gym.make`` arguments.
        address: As :func:`connect` (None or ``""``: a local Ray).
        workers: Actors (None or 0: one per CPU of the cluster, at most ``n_envs``).
        wrapper_class: A wrapper for every env, as ``make_vec_env``'s.
        wrapper_kwargs: Its arguments.
        **vec_env_kwargs: Further :class:`RayVecEnv` arguments (``step_timeout``, ``max_restarts``...).
    """
    connect(address or None)
    vec_env_kwargs = {"num_workers": workers or None, **vec_env_kwargs}
    wrapping = {"wrapper_class": wrapper_class, "wrapper_kwargs": wrapper_kwargs}
    make = {"n_envs": n_envs, "seed": seed, "env_kwargs": env_kwargs, "vec_env_kwargs": vec_env_kwargs}
    return make_vec_env(env_id, vec_env_cls=RayVecEnv, **make, **wrapping)
