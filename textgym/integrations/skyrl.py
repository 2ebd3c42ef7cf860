"""Train on any textgym task with SkyRL: a ``skyrl_gym`` env, its registration and a dataset exporter.

SkyRL's generator reads a parquet dataset, one row per prompt, and for each trajectory
builds an env with ``skyrl_gym.make(row["env_class"], env_config=..., extras=...)``, where
``extras`` is the row without ``prompt`` and ``env_class`` (plus ``max_turns``, which the
generator sets from ``generator.max_turns``). It calls ``init(prompt)``, then ``step`` with
each decoded reply until the env says ``done``; it keeps the reply's token ids as the
policy produced them and appends the env's observation messages through the chat template
(token-in/token-out), so the env works at the text level.

* :func:`export_dataset` writes a split's prompts as SkyRL dataset rows: ``data_source``
  (the env id), ``prompt`` (chat messages), ``env_class`` (``"textgym"``),
  ``reward_spec`` (``{"method": "rule", "textgym_spec": <EpisodeSpec JSON>}``) and
  ``extra_info`` (``env_id``, ``split``, ``index``, ``prompt_id``).
* :func:`register` registers :class:`SkyRLTextEnv` under ``"textgym"``; call it inside
  SkyRL's entry point (the Ray task that builds the generator).
* :class:`SkyRLTextEnv` plays one episode through :class:`textgym.core.TextEpisode`, the
  task rebuilt from the row's spec, so rewards and episode ends are those of
  :class:`textgym.text_env.TextEnv` for the same reply texts.

Example (a SkyRL entry point)::

    from textgym.integrations.skyrl import export_dataset, register

    export_dataset("TextGym/Dialogue-v0", "train", "data/train.parquet")

    @ray.remote(num_cpus=1)
    def skyrl_entrypoint(cfg):
        register(tokenizer=cfg.trainer.policy.model.path)
        BasePPOExp(cfg).run()
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from textgym.checks import check_integer
from textgym.core import Message, validate_messages
from textgym.integrations import EpisodeSpec, prompt_rows, require_engine

#: The installed skyrl-gym version (checked against the supported range on import).
SKYRL_GYM_VERSION = require_engine("skyrl-gym")

import skyrl_gym  # noqa: E402
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput  # noqa: E402
from skyrl_gym.envs.registration import deregister  # noqa: E402

#: The SkyRL env class textgym's rows name (``environment.env_class`` in SkyRL's config).
ENV_CLASS = "textgym"
#: The ``reward_spec`` field that holds the row's :class:`~textgym.integrations.EpisodeSpec` JSON.
SPEC_FIELD = "textgym_spec"


def end_of_turn_strings(tokenizer: Any) -> list[str]:
    """The texts of the token ids that end a reply for ``tokenizer``: its EOS and its generation config's.

    Args:
        tokenizer: A Hugging Face tokenizer, or a model name textgym can load one for
            (``"default"``, ``"tiny"``, a local directory or a hub id; no remote code).

    Raises:
        ModelNotFoundError: A model name that cannot be found locally or on the hub.
    """
    from textgym.models import eos_token_ids, load_tokenizer, resolve_model_path

    if isinstance(tokenizer, str):
        model_dir = resolve_model_path(tokenizer)
        tokenizer = load_tokenizer(tokenizer)
    else:
        model_dir = getattr(tokenizer, "name_or_path", None)
    return sorted({tokenizer.decode([token]) for token in eos_token_ids(tokenizer, model_dir)})


def reply_text(action: Any, end_strings: Sequence[str] = ()) -> str:
    r"""The reply text a SkyRL action stands for: what :class:`~textgym.text_env.TextEnv` would score.

    TextEnv scores ``decode(reply ids up to the first end token, skip_special_tokens=True).strip()``.
    SkyRL's inference engines decode with ``skip_special_tokens=True`` too, so the action
    normally holds no end-of-turn token; a backend that keeps special tokens leaves the end
    token at the end of the text. So: surrounding whitespace is stripped, then one trailing
    end string (:func:`end_of_turn_strings`), then whitespace again. The same strings inside
    the reply are kept, as TextEnv keeps text the agent spelled out.

    >>> reply_text("  Paris.<|im_end|>\n", ["<|im_end|>"])
    'Paris.'
    >>> reply_text("Say <|im_end|> twice<|im_end|>", ["<|im_end|>"])
    'Say <|im_end|> twice'

    Raises:
        TypeError: ``action`` is not a str.
    """
    if not isinstance(action, str):
        raise TypeError(f"a SkyRL action must be the reply text (str), got {type(action).__name__}: {action!r:.80}")
    text = action.strip()
    for end in sorted(end_strings, key=len, reverse=True):
        if text.endswith(end):
            return text[: -len(end)].strip()
    return text


def _max_turns(extras: Mapping[str, Any]) -> int | None:
    value = extras.get("max_turns")
    if value is None:
        return None
    return check_integer(value, "extras['max_turns'] (SkyRL's generator.max_turns)", minimum=1)


def _spec_json(extras: Any) -> Any:
    if not isinstance(extras, Mapping):
        raise TypeError(f"extras must be a SkyRL dataset row (a mapping), got {type(extras).__name__}")
    reward_spec = extras.get("reward_spec")
    if not isinstance(reward_spec, Mapping) or reward_spec.get(SPEC_FIELD) is None:
        raise ValueError(
            f"extras['reward_spec'][{SPEC_FIELD!r}] is missing (reward_spec: {reward_spec!r:.100}); "
            "write the dataset with textgym.integrations.skyrl.export_dataset"
        )
    return reward_spec[SPEC_FIELD]


class SkyRLTextEnv(BaseTextEnv):
    """One episode of a textgym task as a SkyRL ``BaseTextEnv``, built from a dataset row.

    Args:
        env_config: SkyRL's per-env-class config (``environment.skyrl_gym.<env_class>``);
            unused.
        extras: The dataset row without ``prompt`` and ``env_class``, as SkyRL's generator
            passes it: ``reward_spec[SPEC_FIELD]`` holds the episode's
            :class:`~textgym.integrations.EpisodeSpec` JSON and ``max_turns`` (set by the
            generator) bounds the episode's replies. Other fields are ignored.
        end_strings: Texts removed from the end of an action before scoring (see
            :func:`reply_text`); :func:`register` sets them from a tokenizer.

    Raises:
        ValueError: No spec, a malformed spec or one written by another textgym version,
            an unknown env id, a prompt id not in the split, or a bad ``max_turns``.

    Episodes:
        ``init(prompt)`` checks that SkyRL's prompt is the spec's and returns it with
        ``{"prompt_id", "env_id", **prompt info}``. Each ``step(action)`` scores the reply
        with the task and returns the messages that follow it as ``observations`` (the next
        user turn of a Dialogue; none once ``done``), its reward and ``done`` when the task
        is over. ``metadata`` holds ``prompt_id``, ``turn``, the scored ``reply``, its
        ``reward`` and the task's info (``reward_components``); at the end also
        ``end_reason`` (``"task_over"``, or ``"max_turns"`` when ``max_turns`` replies came
        before the task was over), ``episode_reward`` and ``guard``
        (:meth:`textgym.core.TextEpisode.guard`). :meth:`get_metrics` gives the numeric
        episode metrics SkyRL averages per env class.
    """

    def __init__(
        self, env_config: Any = None, extras: Mapping[str, Any] | None = None, end_strings: Sequence[str] = ()
    ) -> None:
        super().__init__()
        extras = {} if extras is None else extras
        self.episode_spec = EpisodeSpec.from_json(_spec_json(extras))
        self.max_turns = _max_turns(extras)
        if isinstance(end_strings, str) or not all(isinstance(s, str) and s for s in end_strings):
            raise ValueError(f"end_strings must be a list of non-empty strings, got {end_strings!r:.80}")
        self.end_strings = tuple(end_strings)
        # Starting now names an unknown prompt id when SkyRL builds the env, not at init().
        self._episode = self.episode_spec.start()
        self._initialized = False

    def init(self, prompt: Sequence[Message]) -> tuple[list[Message], dict[str, Any]]:
        """Start the episode: check that ``prompt`` is the spec's prompt and return it with metadata.

        Raises:
            ValueError: ``prompt`` is not a list of chat messages, or differs from the prompt
                the spec's task gives (the dataset was written from other data or options).
        """
        if self._initialized:
            self._episode = self.episode_spec.start()
        self._initialized, self.turns = True, 0
        expected = self._episode.prompt.messages
        # Rows read back through pandas hold arrays of dicts rather than lists.
        items = list(prompt) if isinstance(prompt, Iterable) and not isinstance(prompt, (str, Mapping)) else prompt
        if isinstance(items, list):
            items = [dict(m) if isinstance(m, Mapping) else m for m in items]
        given = validate_messages(items, "prompt")
        for index in range(max(len(given), len(expected))):
            got = given[index] if index < len(given) else None
            want = expected[index] if index < len(expected) else None
            if got != want:
                raise ValueError(
                    f"the prompt of {self.episode_spec.env_id} prompt {self.episode_spec.prompt_id!r} differs from "
                    f"the task's at message {index}: got {got!r:.100}, expected {want!r:.100}; export the dataset again"
                )
        metadata = {"prompt_id": self.episode_spec.prompt_id, "env_id": self.episode_spec.env_id}
        return [dict(m) for m in expected], {**metadata, **self._episode.prompt.info}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        """Score one reply (see :func:`reply_text`) and say what follows.

        Raises:
            TypeError: ``action`` is not a str.
            RuntimeError: Called before ``init`` or after the episode ended.
        """
        reply = reply_text(action, self.end_strings)
        if not self._initialized:
            raise RuntimeError("step() called before init(prompt); SkyRL calls init first")
        if self._episode.state == "over":
            raise RuntimeError(
                f"step() called after the episode of prompt {self.episode_spec.prompt_id!r} ended (done was True)"
            )
        result = self._episode.step(reply)
        self.turns = self._episode.turn
        metadata: dict[str, Any] = {
            "prompt_id": self.episode_spec.prompt_id,
            "turn": self.turns - 1,
            "reply": reply,
            "reward": result.reward,
            **result.info,
        }
        done = result.terminated
        if not done and self.max_turns is not None and self.turns >= self.max_turns:
            warnings.warn(
                f"generator.max_turns={self.max_turns} ended a {self.episode_spec.env_id} episode before the task "
                "was over; set generator.max_turns to at least the task's number of turns",
                stacklevel=2,
            )
            self._episode.end("max_turns")
            done = True
        if done:
            metadata.update(self._episode.outcome())
        observations = [] if done else [dict(m) for m in result.next_messages]
        return BaseTextEnvStepOutput(observations=observations, reward=result.reward, done=done, metadata=metadata)

    def get_metrics(self) -> dict[str, float]:
        """Numeric metrics of the episode so far, which SkyRL averages per env class.

        ``episode_reward``, ``turns``, the guard metrics and each reward component as
        ``reward_components/<name>``; empty before the first reply.
        """
        if not self._episode.replies:
            return {}
        guard = self._episode.guard()
        components = guard.pop("reward_components")
        metrics = {"episode_reward": self._episode.total_reward, "turns": float(self._episode.turn)}
        metrics.update({name: float(value) for name, value in guard.items()})
        metrics.update({f"reward_components/{name}": float(value) for name, value in components.items()})
        return metrics


def register(env_class: str = ENV_CLASS, tokenizer: Any = None) -> None:
    """Register :class:`SkyRLTextEnv` with ``skyrl_gym`` as ``env_class``; call it inside SkyRL's entry point.

    Registering again replaces textgym's earlier registration (e.g. with another tokenizer).

    Args:
        env_class: The name rows and ``environment.env_class`` use.
        tokenizer: The policy's tokenizer or model name (e.g. ``cfg.trainer.policy.model.path``):
            its end-of-turn strings are removed from the end of actions (see
            :func:`reply_text`). None removes none, which suits SkyRL's engines (they decode
            with ``skip_special_tokens=True``).

    Raises:
        ValueError: ``env_class`` is empty or registered to another env.
    """
    if not isinstance(env_class, str) or not env_class:
        raise ValueError(f"env_class must be a non-empty string, got {env_class!r}")
    entry_point = f"{__name__}:{SkyRLTextEnv.__name__}"
    existing = skyrl_gym.registry.get(env_class)
    if existing is not None:
        if existing.entry_point != entry_point:
            raise ValueError(
                f"SkyRL env class {env_class!r} is already registered to {existing.entry_point!r}; "
                "pass another env_class (and write it into the rows with export_dataset(env_class=...))"
            )
        deregister(env_class)
    kwargs = {} if tokenizer is None else {"end_strings": end_of_turn_strings(tokenizer)}
    skyrl_gym.register(id=env_class, entry_point=entry_point, kwargs=kwargs)


def dataset_rows(
    env_id: str, split: str = "train", n: int | None = None, *, env_class: str = ENV_CLASS, **task_options: Any
) -> list[dict[str, Any]]:
    """SkyRL dataset rows of a split's prompts (every prompt, or the first ``n``), one per prompt.

    Args:
        env_id: A registered TextGym id (any granularity of a task gives the same rows).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        n: How many prompts; required for tasks that generate prompts without end
            (SparseCompletion), whose prompts are those ``TextEnv.reset(seed=i)`` draws.
        env_class: The SkyRL env class the rows name (see :func:`register`).
        **task_options: Task arguments that differ from the id's registered ones.

    Raises:
        ValueError: An unknown env id, split or task argument, or a bad ``n``.
    """
    if not isinstance(env_class, str) or not env_class:
        raise ValueError(f"env_class must be a non-empty string, got {env_class!r}")
    rows = []
    for index, (prompt_id, messages) in enumerate(prompt_rows(env_id, split, n, **task_options)):
        spec = EpisodeSpec(env_id, prompt_id, split, dict(task_options))
        rows.append(
            {
                "data_source": env_id,
                "prompt": [dict(m) for m in messages],
                "env_class": env_class,
                # A JSON string, not a struct: parquet needs one schema for every row's task options.
                "reward_spec": {"method": "rule", SPEC_FIELD: spec.to_json()},
                "extra_info": {"env_id": env_id, "split": split, "index": index, "prompt_id": prompt_id},
            }
        )
    return rows


def export_dataset(
    env_id: str,
    split: str,
    path: str | Path,
    n: int | None = None,
    *,
    env_class: str = ENV_CLASS,
    **task_options: Any,
) -> Path:
    """Write :func:`dataset_rows` to a parquet file SkyRL reads (``data.train_data``/``data.val_data``).

    Args:
        env_id: A registered TextGym id.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        path: The file to write; it must end in ``.parquet`` (SkyRL reads other names as
            hub datasets). Parent directories are created; an existing file is replaced.
        n: How many prompts (see :func:`dataset_rows`).
        env_class: The SkyRL env class the rows name.
        **task_options: Task arguments that differ from the id's registered ones.

    Returns:
        The path written.

    Raises:
        ValueError: ``path`` does not end in ``.parquet``, or as :func:`dataset_rows`.
    """
    from datasets import Dataset

    path = Path(path)
    if path.suffix != ".parquet":
        raise ValueError(f"path must end in .parquet (SkyRL reads other names as hub datasets), got {str(path)!r}")
    rows = dataset_rows(env_id, split, n, env_class=env_class, **task_options)
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows).to_parquet(str(path))
    return path


__all__ = [
    "ENV_CLASS",
    "SPEC_FIELD",
    "SKYRL_GYM_VERSION",
    "SkyRLTextEnv",
    "dataset_rows",
    "end_of_turn_strings",
    "export_dataset",
    "register",
    "reply_text",
]
