"""Train on any TextGym task with TRL's ``GRPOTrainer``.

* :func:`make_dataset`: a ``datasets.Dataset`` of a split's prompts, in TRL's
  conversational format (a ``prompt`` column of chat messages) plus the columns the
  reward reads (``prompt_id``, ``env_id``, ``split``) and the row's
  :class:`~textgym.integrations.EpisodeSpec` as JSON (``textgym_episode``).
* :func:`reward_function`: a callable for ``GRPOTrainer(reward_funcs=...)`` that scores
  each completion by replaying it through the task (:func:`textgym.rewards.reward_function`,
  the one scoring path), from the row's ``prompt_id``.
* :func:`rollout_function`: a callable for ``GRPOTrainer(rollout_func=...)`` that plays
  each prompt's whole episode with the trainer's model, for multi-turn tasks (Dialogue).
  TRL marks ``rollout_func`` experimental.

Single-turn tasks (Sentiment, Summarization, SparseCompletion) need only the first two::

    from trl import GRPOConfig, GRPOTrainer
    from textgym.integrations.trl import make_dataset, reward_function

    trainer = GRPOTrainer(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        reward_funcs=reward_function("TextGym/Sentiment-v0"),
        train_dataset=make_dataset("TextGym/Sentiment-v0", "train"),
        args=GRPOConfig(output_dir="out", max_completion_length=32),
    )
    trainer.train()

Importing this module checks that the installed TRL is within
:data:`textgym.integrations.SUPPORTED_ENGINES` and raises
:class:`~textgym.integrations.EngineVersionError` naming the installed version if not.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from textgym.checks import check_integer
from textgym.core import TextEpisode, validate_messages
from textgym.integrations import EpisodeSpec, prompt_rows, require_engine
from textgym.rewards import CONVERSATION_COLUMN
from textgym.rewards import reward_function as task_reward

if TYPE_CHECKING:
    import datasets

#: The installed TRL version (checked against the supported range at import).
TRL_VERSION = require_engine("trl")

#: The rollout's column naming the prompt each completion played; the reward scores from it.
PROMPT_ID_COLUMN = "textgym_prompt_id"
#: The column holding each row's :class:`~textgym.integrations.EpisodeSpec` as JSON.
EPISODE_COLUMN = "textgym_episode"


def make_dataset(env_id: str, split: str = "train", n: int | None = None) -> datasets.Dataset:
    """The prompts of ``env_id``'s ``split`` as a TRL conversational dataset.

    Each row is one prompt: ``prompt`` (the chat messages ``reset`` gives), ``prompt_id``,
    ``env_id``, ``split`` and ``textgym_episode`` (the row's
    :class:`~textgym.integrations.EpisodeSpec` JSON, so that a reward function of another
    textgym version refuses the row instead of scoring it differently). The task is built
    with the id's registered arguments.

    Args:
        env_id: A registered TextGym id (every granularity of a task gives the same rows).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        n: The number of prompts: the split's first ``n`` (default: all). A task whose
            prompts are generated without end (SparseCompletion) needs it; its prompts are
            those ``TextEnv.reset(seed=i)`` draws for ``i`` in ``range(n)``.

    Returns:
        A ``datasets.Dataset`` with columns ``prompt``, ``prompt_id``, ``env_id``, ``split``
        and ``textgym_episode``, in the data's order.

    Raises:
        ValueError: An unknown env id or split, ``n`` missing for a generated task, not a
            positive integer, or larger than the split.

    >>> rows = make_dataset("TextGym/Sentiment-v0", "validation", n=2)
    >>> rows.column_names
    ['prompt', 'prompt_id', 'env_id', 'split', 'textgym_episode']
    >>> [message["role"] for message in rows[0]["prompt"]]
    ['system', 'user']
    """
    from datasets import Dataset

    rows = prompt_rows(env_id, split, n)
    if n is not None and len(rows) < n:
        raise ValueError(f"n={n} but {env_id} split {split!r} has only {len(rows)} prompts")
    return Dataset.from_list(
        [
            {
                "prompt": messages,
                "prompt_id": prompt_id,
                "env_id": env_id,
                "split": split,
                EPISODE_COLUMN: EpisodeSpec(env_id, prompt_id, split).to_json(),
            }
            for prompt_id, messages in rows
        ]
    )


@functools.lru_cache(maxsize=4096)
def _read_spec(value: str) -> EpisodeSpec:
    return EpisodeSpec.from_json(value)


def _check_specs(specs: Sequence[Any], prompt_ids: Sequence[Any] | None) -> None:
    """Refuse rows whose episode spec another textgym wrote, or that disagrees with the row."""
    for index, value in enumerate(specs):
        if not isinstance(value, (str, Mapping)):
            raise ValueError(f"row {index}: {EPISODE_COLUMN} must be episode spec JSON, got {value!r:.80}")
        spec = _read_spec(value if isinstance(value, str) else json.dumps(dict(value), sort_keys=True))
        if spec.task_options:
            raise ValueError(
                f"row {index}: its episode spec sets task options {spec.task_options!r:.80}, but reward_function "
                "scores with the id's registered arguments"
            )
        if prompt_ids is not None and index < len(prompt_ids) and spec.prompt_id != prompt_ids[index]:
            raise ValueError(
                f"row {index}: prompt_id {prompt_ids[index]!r} differs from its episode spec's {spec.prompt_id!r}"
            )


def reward_function(env_id: str, split: str | None = None) -> Callable[..., list[float | None]]:
    """A reward function for ``GRPOTrainer(reward_funcs=...)``: the task's reward of each completion.

    A thin layer over :func:`textgym.rewards.reward_function` (the task is rebuilt from the
    id's registered arguments, cached per process, and each completion is replayed through
    the task's ``step`` from its row's ``prompt_id``). On top of it, this one reads two
    columns: ``textgym_episode`` (each row's spec is checked: written by a compatible
    textgym, for the row's prompt id) and ``textgym_prompt_id`` (what
    :func:`rollout_function` returns: the prompt each completion played, which then takes
    the place of ``prompt_id``).

    Rows of another env id get ``None`` (TRL's "not applicable"); every other reward is
    the task's finite reward. A malformed row raises, never scores 0.

    Args:
        env_id: A registered TextGym id.
        split: The split of every prompt id, for rows without a ``split`` column.

    Raises:
        ValueError: ``env_id`` is not a registered TextGym id (at once); at call time, a
            prompt id not in its split, counts that differ, a spec of another textgym
            version, or a conversation that does not follow the task.
        TypeError: At call time, completions that are neither text nor chat messages.
    """
    score = task_reward(env_id, split)

    def reward(
        completions: Sequence[Any],
        prompt_id: Sequence[str] | None = None,
        textgym_prompt_id: Sequence[str] | None = None,
        textgym_episode: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        if textgym_episode is not None:
            _check_specs(textgym_episode, prompt_id)
        if textgym_prompt_id is not None:
            prompt_id = textgym_prompt_id
        return score(completions, prompt_id=prompt_id, **columns)

    reward.__name__ = reward.__qualname__ = score.__name__
    reward.__doc__ = score.__doc__
    return reward


# -- multi-turn rollouts ------------------------------------------------------------------

#: GRPOConfig sampling settings the rollout does not apply, with the value that means "off".
_UNSUPPORTED_SAMPLING = {"top_p": 1.0, "top_k": 0, "min_p": None, "repetition_penalty": 1.0, "use_vllm": False}


def _check_sampling(args: Any) -> None:
    for name, off in _UNSUPPORTED_SAMPLING.items():
        value = getattr(args, name, off)
        if value != off and not (name == "top_k" and value is None):
            raise ValueError(
                f"rollout_function samples with the trainer's model at args.temperature only; "
                f"GRPOConfig {name}={value!r} is not supported (leave it at {off!r})"
            )
    if getattr(args, "generation_kwargs", None):
        raise ValueError(
            f"rollout_function does not apply GRPOConfig generation_kwargs={args.generation_kwargs!r:.80}; "
            "leave it unset"
        )


def _prompt_key(messages: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps([[m["role"], m["content"]] for m in messages])


def rollout_function(
    env_id: str, split: str = "train", n: int | None = None, max_reply_tokens: int | None = None
) -> Callable[[list, Any], dict[str, list]]:
    """A ``rollout_func`` for ``GRPOTrainer`` that plays each prompt's whole textgym episode.

    For multi-turn tasks (Dialogue): the trainer's model writes a reply, the task scores it
    and says what follows (the next user turn), the model writes the next reply, and so on
    until the task is over or a reply runs out of tokens without an end token (then the
    episode stops, as at :class:`~textgym.text_env.TextEnv`'s token level). Any task works;
    single-turn tasks play one reply.

    Token-in/token-out: a completion is the ids the model sampled for each reply (end
    token included), each followed by the chat template's continuation
    (:meth:`textgym.chat.ChatEncoder.continuation`: the end of the assistant turn, the
    next user turn and the generation prompt; its leading end of turn is the sampled end
    token when they are the same token). Earlier turns are never decoded and re-encoded.
    The returned ``env_mask`` is 1 on sampled tokens and 0 on the continuation's, and
    ``logprobs`` hold each sampled token's log-probability under the sampling
    distribution (0.0 on the continuation's). ``textgym_conversation`` (the messages after
    the prompt, through the last reply) and ``textgym_prompt_id`` go to the reward functions, so
    :func:`reward_function` scores the whole conversation turn by turn from the prompt
    that was played.

    TRL passes the rollout only the prompt messages, not the dataset row: the prompt id is
    looked up from the messages among the split's prompts. When several prompts of the
    split have the same messages (the train split of Dialogue has two conversations that
    open with "Hello"), every completion of a training step plays the same one of them, in
    turn from step to step (the split's order, at ``global_step`` modulo their number), so
    the completions of one GRPO group always play one conversation; ``textgym_prompt_id``
    says which, and :func:`reward_function` scores from it.

    Sampling uses the trainer's model in this process at ``GRPOConfig.temperature``; each
    reply gets ``max_reply_tokens`` tokens (default: ``GRPOConfig.max_completion_length``).
    TRL marks ``rollout_func`` experimental (set ``TRL_EXPERIMENTAL_SILENCE=1`` to silence
    its warning).

    Args:
        env_id: A registered TextGym id; the task is built with its registered arguments.
        split: The split the dataset's prompts come from.
        n: As :func:`make_dataset`'s ``n`` (needed for generated tasks).
        max_reply_tokens: The token budget of one reply.

    Returns:
        ``rollout(prompts, trainer) -> dict`` with ``prompt_ids``, ``completion_ids``,
        ``logprobs``, ``env_mask``, ``textgym_conversation`` and ``textgym_prompt_id``, one
        entry per prompt received (TRL 1.16 passes each prompt ``num_generations`` times).

    Raises:
        ValueError: At once, an unknown env id or split, a bad ``n`` or ``max_reply_tokens``;
            when called, a prompt that is not in the split, or GRPOConfig sampling
            settings the rollout does not apply (``top_p``, ``top_k``, ``min_p``,
            ``repetition_penalty``, ``generation_kwargs``, ``use_vllm``).
    """
    if max_reply_tokens is not None:
        max_reply_tokens = check_integer(max_reply_tokens, "max_reply_tokens", minimum=1)
    index: dict[str, list[str]] = {}
    for prompt_id, messages in prompt_rows(env_id, split, n):
        index.setdefault(_prompt_key(messages), []).append(prompt_id)

    def resolve(prompt: Any) -> list[str]:
        messages = validate_messages(prompt, "rollout prompt")
        found = index.get(_prompt_key(messages))
        if not found:
            raise ValueError(
                f"prompt not in {env_id} split {split!r} (last message {messages[-1]['content']!r:.80}); "
                f"build the dataset with make_dataset({env_id!r}, {split!r}) and pass the same split here"
            )
        return found

    def rollout(prompts: list, trainer: Any) -> dict[str, list]:
        _check_sampling(trainer.args)
        step = int(trainer.state.global_step)
        # The same choice for every copy of a prompt, in every process: a group's completions
        # (which TRL may split between processes) all play the same conversation.
        played = [candidates[step % len(candidates)] for candidates in map(resolve, prompts)]
        budget = max_reply_tokens or int(trainer.args.max_completion_length)
        return _play_episodes(env_id, split, played, trainer, budget)

    rollout.__name__ = rollout.__qualname__ = "textgym_rollout"
    return rollout


def _replies_onward(episode: TextEpisode) -> list[dict[str, str]]:
    """The messages after the prompt, through the last reply (a reply cut by its budget has no user turn after it)."""
    messages = episode.messages[len(episode.prompt.messages) :]
    last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
    return messages[: last + 1]


def _play_episodes(env_id: str, split: str, prompt_ids: Sequence[str], trainer: Any, max_reply_tokens: int) -> dict:
    """Play one episode per prompt id with ``trainer``'s model, all episodes' replies of a turn in one batch.

    See :func:`rollout_function`, which calls it, for what the result holds.
    """
    import torch
    from trl.models import unwrap_model_for_generation

    from textgym.chat import ChatEncoder, ChatTemplateError
    from textgym.lm import sample

    tokenizer = trainer.processing_class
    chat = ChatEncoder(tokenizer)
    if not chat.appendable:
        raise ChatTemplateError(
            "rollout_function needs a chat template that appends turns (token-in/token-out); this one rewrites them"
        )
    end_ids, pad_id = list(trainer.eos_token_ids), int(tokenizer.pad_token_id)
    # A reply cut by its budget ends the episode, as at TextEnv's token level.
    episodes = [EpisodeSpec(env_id, prompt_id, split).start(cut_reply_ends=True) for prompt_id in prompt_ids]
    prompt_ids_out = [chat.encode(episode.messages) for episode in episodes]
    completions: list[list[int]] = [[] for _ in episodes]
    logprobs: list[list[float]] = [[] for _ in episodes]
    env_mask: list[list[int]] = [[] for _ in episodes]
    running = list(range(len(episodes)))
    with unwrap_model_for_generation(
        trainer.model_wrapped,
        trainer.accelerator,
        gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
        gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
    ) as model:
        device = next(model.parameters()).device
        while running:
            contexts = [prompt_ids_out[i] + completions[i] for i in running]
            width = max(len(context) for context in contexts)
            input_ids = torch.full((len(running), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(running), width), dtype=torch.long)
            for row, context in enumerate(contexts):
                input_ids[row, width - len(context) :] = torch.tensor(context)
                attention_mask[row, width - len(context) :] = 1
            drawn = sample(
                model,
                input_ids.to(device),
                attention_mask.to(device),
                max_reply_tokens,
                end_ids,
                pad_id,
                temperature=float(trainer.args.temperature),
            )
            still_running = []
            for row, i in enumerate(running):
                length, finished = int(drawn.lengths[row]), bool(drawn.finished[row])
                reply = drawn.tokens[row, :length].tolist()
                completions[i] += reply
                logprobs[i] += drawn.logprobs[row, :length].tolist()
                env_mask[i] += [1] * length
                episode = episodes[i]
                answered = list(episode.messages)
                text = chat.decode_reply(reply[:-1] if finished else reply)
                result = episode.step(text, finished)
                if episode.state == "over":
                    continue
                following = chat.continuation(answered, result.next_messages)
                if following[:1] == reply[-1:]:  # the sampled end token is the template's end of turn
                    following = following[1:]
                completions[i] += following
                logprobs[i] += [0.0] * len(following)
                env_mask[i] += [0] * len(following)
                still_running.append(i)
            running = still_running
    return {
        "prompt_ids": prompt_ids_out,
        "completion_ids": completions,
        "logprobs": logprobs,
        "env_mask": env_mask,
        CONVERSATION_COLUMN: [_replies_onward(episode) for episode in episodes],
        PROMPT_ID_COLUMN: list(prompt_ids),
    }


__all__ = [
    "EPISODE_COLUMN",
    "PROMPT_ID_COLUMN",
    "TRL_VERSION",
    "make_dataset",
    "reward_function",
    "rollout_function",
]
